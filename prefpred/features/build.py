"""Length, style, overlap and similarity features of a preference table, in polars.

Everything is computed from the prompt and the two responses of each row (never from labels), by
polars expressions over whole columns: turns are exploded into one long frame, counted once with
the patterns of :mod:`prefpred.features.patterns`, and aggregated back per row over all turns
(``_all``) and for the last turn (``_last``). Character trigrams are the one exception: they are
read straight from the UTF-8 buffers with numpy (vectorised decoding, exact code points, no
per-row Python). Large tables are processed in chunks of rows so that peak memory stays bounded.

When the compiled kernels of :mod:`prefpred.features.kernels` are installed (the default), they
compute the integer counts behind the single-character and run counts, word trigrams, word
overlaps and character trigrams in one pass over the bytes; every float is still computed by the
expressions here, so the features are bit-identical either way.

Feature names follow :mod:`prefpred.features.symmetry` (``a_``/``b_`` per response, ``d_``
differences, ``lr_`` log-ratios, ``s_`` symmetric pair features, ``p_`` prompt features,
``source``). :func:`feature_names` lists them without computing anything.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import polars as pl
import pyarrow as pa

from prefpred.data.table import PreferenceTable
from prefpred.features import kernels
from prefpred.features.patterns import COUNTED, LATIN, WORD

#: Bump when any feature's definition changes: caches of other versions are never read.
FEATURE_VERSION: Final = "1"

SCOPES: Final = ("all", "last")
#: Raw per-response counts (summed over turns for ``_all``).
COUNT_STATS: Final[tuple[str, ...]] = (
    "chars", "lines", "words", "tokens", "sentences", "paragraphs",
    "headers", "bold", "italics", "bullets", "numbered", "table_rows", "code_blocks",
    "inline_code", "links", "latex",
    "digits", "upper", "letters", "punct", "question", "exclaim", "emoji",
    "refusal", "apology", "ai_self",
    "latin", "cyrillic", "cjk",
    "ngram3", "rep3",
)
#: Ratios derived from the counts of the same scope: name -> (numerator, denominator).
RATIO_STATS: Final[dict[str, tuple[str, str]]] = {
    "digit_ratio": ("digits", "chars"),
    "upper_ratio": ("upper", "letters"),
    "punct_ratio": ("punct", "chars"),
    "rep3_ratio": ("rep3", "ngram3"),
    "chars_per_word": ("chars", "words"),
    "words_per_sentence": ("words", "sentences"),
    "latin_share": ("latin", "script"),
    "cjk_share": ("cjk", "script"),
    "cyrillic_share": ("cyrillic", "script"),
}
#: Per-response features that are not per scope.
SIDE_STATS: Final = ("empty", "prompt_overlap", "prompt_cos", "script_mismatch")
#: Symmetric pair features.
PAIR_STATS: Final = ("identical", "both_empty", "jaccard_word", "jaccard_char3", "tfidf_cos")
#: Prompt features.
PROMPT_STATS: Final = ("turns", "chars", "chars_last", "words", "tokens", "lines", "code",
                       "question", "latin_share", "cjk_share", "cyrillic_share")
#: Counts the prompt needs (a subset of the response counts).
_PROMPT_COUNTS: Final = ("chars", "lines", "words", "tokens", "code_blocks", "inline_code",
                         "question", "latin", "cyrillic", "cjk")
_SCRIPTS: Final = ("latin", "cjk", "cyrillic")
SEP: Final = "\n"  # turns are joined with this for the whole-conversation similarity features


@dataclass(frozen=True)
class FeatureConfig:
    """Options that change feature values (and so the cache key).

    ``tokenizer``: path to a Hugging Face ``tokenizer.json``; when given, responses also get
    ``hf_tokens`` counts from that fast tokenizer (the regex ``tokens`` count is always there).
    """

    tokenizer: str | None = None

    @property
    def version(self) -> str:
        """Feature version plus a digest of every option that changes values."""
        if self.tokenizer is None:
            return FEATURE_VERSION
        digest = hashlib.sha256(Path(self.tokenizer).read_bytes()).hexdigest()[:12]
        return f"{FEATURE_VERSION}-tok{digest}"

    def count_stats(self) -> tuple[str, ...]:
        return COUNT_STATS + (("hf_tokens",) if self.tokenizer else ())


def _ratio(num: pl.Expr, den: pl.Expr) -> pl.Expr:
    return pl.when(den > 0).then(num / den).otherwise(0.0)


def response_stat_names(config: FeatureConfig | None = None) -> list[str]:
    """Per-response stat names (without side prefix): counts and ratios per scope, then the rest."""
    config = config or FeatureConfig()
    per_scope = [*config.count_stats(), *RATIO_STATS]
    return [f"{s}_{scope}" for scope in SCOPES for s in per_scope] + list(SIDE_STATS)


def log_ratio_stat_names(config: FeatureConfig | None = None) -> list[str]:
    config = config or FeatureConfig()
    return [f"{s}_{scope}" for scope in SCOPES for s in config.count_stats()]


def feature_names(config: FeatureConfig | None = None) -> list[str]:
    """Every feature column, in the order :func:`compute_features` returns them."""
    side = response_stat_names(config)
    return (["source"] + [f"p_{s}" for s in PROMPT_STATS] + [f"s_{s}" for s in PAIR_STATS]
            + [f"a_{s}" for s in side] + [f"b_{s}" for s in side] + [f"d_{s}" for s in side]
            + [f"lr_{s}" for s in log_ratio_stat_names(config)])


# --------------------------------------------------------------------------- per-turn counts
#: Odd 64-bit constants that combine token / character hashes into n-gram hashes.
_K1: Final = 0x9E3779B97F4A7C15
_K2: Final = 0xC2B2AE3D27D4EB4F


def _gram_hashes(hashes: pl.Expr) -> pl.Expr:
    """Hashes of consecutive triples in a list of u64 hashes (wrapping arithmetic, elementwise
    over three aligned slices of each list)."""
    m = (hashes.list.len().cast(pl.Int64) - 2).clip(0)
    return (hashes.list.slice(0, m) * _K1 + hashes.list.slice(1, m) * _K2
            + hashes.list.slice(2, m))


def _count_exprs(names: tuple[str, ...], skip: tuple[str, ...] = ()) -> list[pl.Expr]:
    text = pl.col("text")
    out = []
    for name in names:
        if name in skip:
            continue
        if name == "chars":
            expr = text.str.len_chars()
        elif name == "lines":
            expr = pl.when(text.str.len_chars() > 0).then(
                text.str.count_matches("\n", literal=True) + 1).otherwise(0)
        elif name == "code_blocks":
            expr = text.str.count_matches("```", literal=True) // 2
        elif name == "letters":
            continue  # latin + cyrillic, added after counting
        elif name == "latin":  # counting the (rarer) other characters is faster
            expr = text.str.len_chars() - text.str.count_matches(f"[^{LATIN}]")
        elif name in COUNTED:
            expr = text.str.count_matches(COUNTED[name])
        else:
            continue
        out.append(expr.cast(pl.Float64).alias(name))
    return out


def _long_turns(df: pl.DataFrame, columns: dict[str, str]) -> pl.DataFrame:
    """One row per (row, side, turn): ``_r``, ``side``, ``text``, ``_last``."""
    parts = [
        df.select(
            pl.col("_r"),
            pl.lit(side).alias("side"),
            pl.col(col).alias("text"),
            pl.col(col).list.eval(pl.int_range(pl.len())).alias("_t"),
            pl.col(col).list.len().alias("_n"),
        )
        for side, col in columns.items()
    ]
    long = pl.concat(parts).explode(["text", "_t"])
    return long.with_columns((pl.col("_t") == pl.col("_n") - 1).alias("_last")).drop("_t", "_n")


def _hf_token_counts(texts: pl.Series, tokenizer: str) -> pl.Series:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(tokenizer)
    encodings = tok.encode_batch(texts.to_list(), add_special_tokens=False)
    return pl.Series("hf_tokens", [len(e.ids) for e in encodings], dtype=pl.Float64)


def _turn_table(long: pl.DataFrame, counts: tuple[str, ...], fast: bool) -> pl.DataFrame:
    """Counts per turn and the word-trigram counts; without the kernels (``fast`` False) also
    the hashed word tokens (``th``) that the polars similarity features read."""
    if fast:
        return _turn_table_kernels(long, counts)
    th = (pl.col("text").str.to_lowercase().str.extract_all(WORD)
          .list.eval(pl.element().hash()).alias("th"))
    out = long.with_columns(*_count_exprs(counts), th)
    if "letters" in counts:
        out = out.with_columns((pl.col("latin") + pl.col("cyrillic")).alias("letters"))
    if "ngram3" in counts:
        # (each step materialises its list column: an expression reading a list column several
        # times would otherwise recompute it each time)
        out = out.with_columns(_gram_hashes(pl.col("th")).alias("_g"))
        n = pl.col("_g").list.len().cast(pl.Float64)
        out = out.with_columns(n.alias("ngram3"), (n - pl.col("_g").list.n_unique()
                                                   .cast(pl.Float64)).alias("rep3")).drop("_g")
    return out


def _turn_table_kernels(long: pl.DataFrame, counts: tuple[str, ...]) -> pl.DataFrame:
    """:func:`_turn_table` by the compiled kernels: the same counts, as Float64."""
    done = tuple(c for c in kernels.TEXT_COUNTS if c in counts)
    counted = kernels.text_counts(long["text"])
    cols = [pl.Series(name, counted[:, kernels.TEXT_COUNTS.index(name)], dtype=pl.Float64)
            for name in done]
    if "letters" in counts:
        latin, cyr = (counted[:, kernels.TEXT_COUNTS.index(c)] for c in ("latin", "cyrillic"))
        cols.append(pl.Series("letters", latin + cyr, dtype=pl.Float64))
    if "ngram3" in counts:
        grams = kernels.word_ngrams(long["text"].str.to_lowercase())
        cols += [pl.Series("ngram3", grams[:, 0], dtype=pl.Float64),
                 pl.Series("rep3", grams[:, 1], dtype=pl.Float64)]
    return long.with_columns(*_count_exprs(counts, skip=done), *cols)


def _scope_frames(turns: pl.DataFrame, counts: tuple[str, ...]) -> dict[str, pl.DataFrame]:
    """Per (row, side) counts over all turns and for the last turn, with the ratios added."""
    all_ = turns.group_by(["_r", "side"]).agg([pl.col(c).sum() for c in counts])
    last = turns.filter(pl.col("_last")).select(["_r", "side", *counts])
    out = {}
    for scope, frame in (("all", all_), ("last", last)):
        if "latin" in counts:
            frame = frame.with_columns(
                (pl.col("latin") + pl.col("cjk") + pl.col("cyrillic")).alias("script"))
        have = {*counts, "script"} if "latin" in counts else set(counts)
        ratios = [_ratio(pl.col(num), pl.col(den)).alias(name)
                  for name, (num, den) in RATIO_STATS.items() if num in have and den in have]
        out[scope] = frame.with_columns(ratios)
    return out


# --------------------------------------------------------------------------- similarity
def _word_counts(tokens: pl.DataFrame) -> pl.DataFrame:
    """The integer sums behind :func:`_word_features` (:data:`kernels.WORD_COLUMNS` per ``_r``,
    rows without a token left out), from hashed tokens ``(_r, side, h)``."""
    docs = ("p", "a", "b")
    # term counts per (row, token) and document; plain column sums keep group-by on its fast path
    # (one u64 key per (row, token) groups faster than the two columns; a collision would need
    # two 64-bit hashes to agree)
    key = (pl.col("h") + pl.col("_r").cast(pl.UInt64) * _K1).alias("key")
    marked = tokens.select("_r", key, *[(pl.col("side") == k).cast(pl.Int64).alias(f"t{k}")
                                        for k in docs])
    per_token = marked.group_by("key").agg(pl.col("_r").first(),
                                           *[pl.col(f"t{k}").sum() for k in docs])
    present = {k: (pl.col(f"t{k}") > 0).cast(pl.Int64) for k in docs}
    per_token = per_token.with_columns(sum(present.values()).alias("df"))
    terms = []
    for d in (1, 2, 3):
        at_d = (pl.col("df") == d).cast(pl.Int64)
        for x, y in (("p", "p"), ("a", "a"), ("b", "b"), ("a", "b"), ("p", "a"), ("p", "b")):
            if x != y and d == 1:
                continue  # a term in both documents has df >= 2
            terms.append((at_d * pl.col(f"t{x}") * pl.col(f"t{y}")).alias(f"{x}{y}{d}"))
    terms += [present["p"].alias("np"),
              (present["a"] * present["b"]).alias("iab"),
              ((present["a"] + present["b"]) > 0).cast(pl.Int64).alias("uab"),
              (present["p"] * present["a"]).alias("ipa"),
              (present["p"] * present["b"]).alias("ipb")]
    per_token = per_token.select("_r", *terms)
    return per_token.group_by("_r").agg(pl.exclude("_r").sum())


def _word_features(agg: pl.DataFrame) -> pl.DataFrame:
    """Word-set overlaps and TF-IDF cosines from the integer sums of :func:`_word_counts`.

    The TF-IDF part is scikit-learn's ``TfidfVectorizer(token_pattern=WORD)`` fitted on the
    row's three documents (prompt, A, B): raw term counts, smooth idf ``ln(4 / (1 + df)) + 1``,
    L2 norm. A document frequency is 1, 2 or 3, so every dot product is a sum of three integer
    sums (one per document frequency) times idf squared: exact and independent of row order,
    and swapping A and B gives bit-identical values.
    """
    idf2 = {d: (math.log(4.0 / (1.0 + d)) + 1.0) ** 2 for d in (1, 2, 3)}

    def weighted(x: str, y: str) -> pl.Expr:
        ds = (1, 2, 3) if x == y else (2, 3)
        return sum(pl.col(f"{x}{y}{d}").cast(pl.Float64) * idf2[d] for d in ds)

    def cosine(x: str, y: str) -> pl.Expr:
        den = (weighted(x, x) * weighted(y, y)).sqrt()
        return pl.when(den > 0).then(weighted(x, y) / den).otherwise(0.0)

    f = pl.Float64
    return agg.select(
        "_r",
        cosine("a", "b").alias("s_tfidf_cos"),
        cosine("p", "a").alias("a_prompt_cos"),
        cosine("p", "b").alias("b_prompt_cos"),
        pl.when(pl.col("uab") > 0).then(pl.col("iab").cast(f) / pl.col("uab")).otherwise(1.0)
        .alias("s_jaccard_word"),
        _ratio(pl.col("ipa").cast(f), pl.col("np").cast(f)).alias("a_prompt_overlap"),
        _ratio(pl.col("ipb").cast(f), pl.col("np").cast(f)).alias("b_prompt_overlap"),
    )


def _code_points(data: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decode valid UTF-8 (what polars holds) into code points, vectorised: returns the code
    points (u64) and each string's offsets counted in characters."""
    if len(data) == 0 or int(data.max()) < 0x80:
        return data.astype(np.uint64), offsets
    lead = np.flatnonzero((data & 0xC0) != 0x80)  # the first byte of every character
    cp = data[lead].astype(np.uint64)
    multi = np.flatnonzero(cp >= 0xC0)  # characters of two to four bytes
    if len(multi):
        first = cp[multi]
        n_cont = np.where(first >= 0xF0, 3, np.where(first >= 0xE0, 2, 1))
        value = first & np.where(n_cont == 3, 0x07, np.where(n_cont == 2, 0x0F, 0x1F)
                                 ).astype(np.uint64)
        padded = np.concatenate([data, np.zeros(3, dtype=np.uint8)]).astype(np.uint64)
        at = lead[multi]
        for k in (1, 2, 3):
            cont = (value << np.uint64(6)) | (padded[at + k] & np.uint64(0x3F))
            value = np.where(n_cont >= k, cont, value)
        cp[multi] = value
    return cp, np.searchsorted(lead, offsets)


def _char_trigrams(texts: pl.Series) -> pl.Series:
    """Every character trigram of each text as an exact integer: three 21-bit code points packed
    into a u64 (no hashing, so no collisions). A list column, one list per text, in order."""
    cp, offsets = _code_points(*kernels.utf8_buffers(texts))
    n_chars = np.diff(offsets)
    n_grams = np.maximum(n_chars - 2, 0)
    if len(cp) >= 3:
        grams = (cp[:-2] << np.uint64(42)) | (cp[1:-1] << np.uint64(21)) | cp[2:]
        keep = np.ones(len(grams), dtype=bool)
        for k in (1, 2):  # a trigram starting at one of a text's last two characters crosses
            at = offsets[1:] - k  # into the next text
            keep[at[(at >= offsets[:-1]) & (at < len(grams))]] = False
        grams = grams[keep]
    else:
        grams = np.zeros(0, dtype=np.uint64)
    list_offsets = np.zeros(len(n_grams) + 1, dtype=np.int64)
    np.cumsum(n_grams, out=list_offsets[1:])
    return pl.Series(texts.name, pa.LargeListArray.from_arrays(
        pa.array(list_offsets), pa.array(grams, type=pa.uint64())))


def _char_jaccard(texts: pl.DataFrame, rows: pl.Series, fast: bool) -> pl.DataFrame:
    """Jaccard similarity of the character-trigram sets of A and B, from the lower-cased
    responses (turns joined) in columns ``a`` and ``b``."""
    if fast:
        counted = kernels.char_overlap(texts["a"], texts["b"])
        g = pl.DataFrame({"i": counted[:, 2].astype(np.float64),
                          "n": (counted[:, 0] + counted[:, 1]).astype(np.float64)})
    else:
        g = pl.DataFrame([_char_trigrams(texts[k]).list.unique().alias(k) for k in ("a", "b")])
        inter = pl.col("a").list.set_intersection("b").list.len().cast(pl.Float64)
        g = g.select(inter.alias("i"), (pl.col("a").list.len() + pl.col("b").list.len())
                     .cast(pl.Float64).alias("n"))
    union = pl.col("n") - pl.col("i")
    return g.select(rows, pl.when(union > 0).then(pl.col("i") / union).otherwise(1.0)
                    .alias("s_jaccard_char3"))


# --------------------------------------------------------------------------- assembly
def _chunk_features(df: pl.DataFrame, config: FeatureConfig, fast: bool) -> pl.DataFrame:
    # Eager on purpose: each step runs its expressions in parallel, and no optimiser inlines
    # a list-valued column into the several expressions that read it (recomputing it).
    counts = config.count_stats()
    ld = df

    # responses: per-turn counts, then per scope
    long = _long_turns(ld, {"a": "response_a", "b": "response_b"})
    if config.tokenizer:
        long = long.with_columns(_hf_token_counts(long["text"], config.tokenizer))
    turns = _turn_table(long, counts, fast).drop("text")
    pturns = _turn_table(_long_turns(ld, {"p": "prompt"}), _PROMPT_COUNTS, fast).drop("text")

    scopes = _scope_frames(turns.drop("th", strict=False), counts)
    per_scope = [*counts, *RATIO_STATS]
    out = ld.select("_r", "source")
    for side in ("a", "b"):
        for scope, frame in scopes.items():
            sel = frame.filter(pl.col("side") == side).select(
                "_r", *[pl.col(s).alias(f"{side}_{s}_{scope}") for s in per_scope])
            out = out.join(sel, on="_r", how="left")
        out = out.with_columns(
            (pl.col(f"{side}_words_all") == 0).cast(pl.Float64).alias(f"{side}_empty"))

    # prompt
    pscopes = _scope_frames(pturns.drop("th", strict=False), _PROMPT_COUNTS)
    prompt = pscopes["all"].select(
        "_r",
        pl.col("chars").alias("p_chars"), pl.col("words").alias("p_words"),
        pl.col("tokens").alias("p_tokens"), pl.col("lines").alias("p_lines"),
        (pl.col("code_blocks") + pl.col("inline_code")).alias("p_code"),
        pl.col("question").alias("p_question"),
        *[pl.col(f"{s}_share").alias(f"p_{s}_share") for s in _SCRIPTS],
        pl.col("script").alias("_pscript"),
    ).join(pscopes["last"].select("_r", pl.col("chars").alias("p_chars_last")), on="_r")
    out = out.join(prompt, on="_r", how="left")

    # script mismatch between prompt and each response (half the L1 distance of script shares)
    for side in ("a", "b"):
        dist = sum((pl.col(f"p_{s}_share") - pl.col(f"{side}_{s}_share_all")).abs()
                   for s in _SCRIPTS) / 2.0
        has = (pl.col("_pscript") > 0) & (
            sum(pl.col(f"{side}_{s}_all") for s in _SCRIPTS) > 0)
        out = out.with_columns(
            pl.when(has).then(dist).otherwise(0.0).alias(f"{side}_script_mismatch"))

    # pair similarity: lower-cased documents (turns joined), word tokens hashed
    sides = (("p", "prompt"), ("a", "response_a"), ("b", "response_b"))[0 if fast else 1:]
    docs = ld.select(*[pl.col(col).list.join(SEP).str.to_lowercase().alias(k) for k, col in sides])
    if fast:
        word_counts = kernels.word_overlap(docs["p"], docs["a"], docs["b"]).insert_column(
            0, ld["_r"])
    else:
        tokens = pl.concat([pturns.select("_r", "side", "th"), turns.select("_r", "side", "th")]
                           ).explode("th").drop_nulls("th").rename({"th": "h"})
        word_counts = _word_counts(tokens)
    exact = ld.select(
        "_r",
        pl.col("prompt").list.len().cast(pl.Float64).alias("p_turns"),
        (pl.col("response_a").list.join(SEP) == pl.col("response_b").list.join(SEP))
        .cast(pl.Float64).alias("s_identical"),
    )
    zero = {c: 0.0 for c in ("s_tfidf_cos", "a_prompt_cos", "b_prompt_cos", "a_prompt_overlap",
                             "b_prompt_overlap")}
    out = (out.join(exact, on="_r", how="left")
           .join(_word_features(word_counts), on="_r", how="left")
           .join(_char_jaccard(docs, ld["_r"], fast), on="_r", how="left")
           .with_columns(*[pl.col(c).fill_null(v) for c, v in zero.items()],
                         pl.col("s_jaccard_word").fill_null(1.0),
                         (pl.col("a_empty") * pl.col("b_empty")).alias("s_both_empty")))

    # differences and log-ratios
    side_names = response_stat_names(config)
    out = out.with_columns(
        [(pl.col(f"a_{s}") - pl.col(f"b_{s}")).alias(f"d_{s}") for s in side_names]
        + [(pl.col(f"a_{s}").log1p() - pl.col(f"b_{s}").log1p()).alias(f"lr_{s}")
           for s in log_ratio_stat_names(config)]
    )
    return out.sort("_r").select(feature_names(config))


def compute_features(table: PreferenceTable, config: FeatureConfig | None = None, *,
                     chunk_rows: int = 4096, progress: bool = False,
                     use_kernels: bool | None = None) -> pl.DataFrame:
    """The feature frame of a table: one row per table row (same order), :func:`feature_names`
    columns (``source`` a string, every other column Float64).

    Rows are processed in chunks of ``chunk_rows`` (bounded memory), as many chunks at a time
    as polars has threads (polars releases the GIL, and a chunk's serial steps leave cores
    idle that another chunk can use). ``use_kernels``: count with the compiled kernels of
    :mod:`prefpred.features.kernels` (default: when installed); the values are the same.
    """
    from concurrent.futures import ThreadPoolExecutor

    config = config or FeatureConfig()
    fast = kernels.available() if use_kernels is None else use_kernels
    if fast and not kernels.installed():
        raise RuntimeError("the compiled feature kernels are not installed (pip install -e . "
                           "compiles them); use_kernels=False computes the same features")
    df = table.df.select("prompt", "response_a", "response_b", "source").with_row_index("_r")
    n_chunks = max(1, math.ceil(df.height / chunk_rows))
    chunks = [df.slice(i * chunk_rows, chunk_rows) for i in range(n_chunks)]
    workers = max(1, min(pl.thread_pool_size(), n_chunks))
    from rich.progress import Progress

    with Progress(disable=not progress, transient=True) as bar, \
            ThreadPoolExecutor(max_workers=workers) as pool:
        task = bar.add_task("features", total=n_chunks)
        parts = []
        for part in pool.map(lambda c: _chunk_features(c, config, fast), chunks):
            parts.append(part)
            bar.advance(task)
    return pl.concat(parts, how="vertical")
