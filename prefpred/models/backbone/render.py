"""Prompt rendering and turn-aware truncation: a pair of conversations becomes token ids.

A rendered pair is one sequence::

    prefix  PROMPT  mid_a  RESPONSE_A  mid_b  RESPONSE_B  suffix

where the fixed pieces come from a :class:`Template` (the tokenizer's chat template for decoders
that have one, ``[CLS] ... [SEP]`` markers for encoders) and each part is its turns joined by a
turn separator. The token budget (``max_length`` minus the fixed pieces) is split by
:func:`allocate_budgets`: the prompt may take up to ``prompt_share`` of it, the responses share
the rest equally, and budget one part does not use goes to the others. Truncation keeps the
*latest* tokens of each part (``left``: earlier turns go first), never drops a response entirely
(each keeps at least ``min_response_tokens`` when it has them), and gives a pair and its swap the
same budgets (the rule is symmetric in A and B). What was cut is recorded per row.

``encode='texts'`` renders each prompt and response alone instead (``prefix_text TEXT
suffix_text``), with fixed per-part budgets, so that equal texts give equal sequences and a frozen
encoder embeds each distinct text once.

Everything here works on whole columns (polars, numpy); the tokenizer sees each distinct turn
text once, in one batch call.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass

import numpy as np
import polars as pl

from prefpred.data.table import PreferenceTable
from prefpred.errors import ConfigError

PARTS = ("prompt", "response_a", "response_b")
IDS = pl.List(pl.Int32)
_CONTENT_MARK = "\ue000"  # a private-use character: where the content goes in a chat template


@dataclass(frozen=True)
class Template:
    """The fixed token pieces around the parts of a rendered pair (or of a single text)."""

    prefix: tuple[int, ...]
    mid_a: tuple[int, ...]
    mid_b: tuple[int, ...]
    suffix: tuple[int, ...]
    turn_sep: tuple[int, ...]
    text_prefix: tuple[int, ...]
    text_suffix: tuple[int, ...]

    @property
    def overhead(self) -> int:
        return len(self.prefix) + len(self.mid_a) + len(self.mid_b) + len(self.suffix)

    @property
    def text_overhead(self) -> int:
        return len(self.text_prefix) + len(self.text_suffix)


def encode_texts(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of each text, no special tokens added (one batch call into the Rust tokenizer)."""
    if not texts:
        return []
    backend = _plain_backend(tokenizer)
    if backend is not None:
        return [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)]
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def _plain_backend(tokenizer):
    """The Rust tokenizer without the padding / truncation a tokenizer.json may switch on."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or (backend.padding is None and backend.truncation is None):
        return backend
    cached = getattr(tokenizer, "_prefpred_plain_backend", None)
    if cached is None:
        from tokenizers import Tokenizer

        cached = Tokenizer.from_str(backend.to_str())
        cached.no_padding()
        cached.no_truncation()
        with contextlib.suppress(AttributeError):  # __slots__: rebuilt on each call
            tokenizer._prefpred_plain_backend = cached
    return cached


def build_template(tokenizer, *, encoder: bool, use_chat_template: bool = True,
                   instruction: str = "") -> Template:
    """The template of a backbone: chat template (decoders), plain markers otherwise."""

    def enc(text: str) -> tuple[int, ...]:
        return tuple(encode_texts(tokenizer, [text])[0]) if text else ()

    def token(*names: str) -> tuple[int, ...]:
        for name in names:
            tid = getattr(tokenizer, f"{name}_token_id", None)
            if tid is not None:
                return (int(tid),)
        return ()

    if encoder:
        start, sep = token("cls", "bos"), token("sep", "eos")
        turn_sep = sep or enc(" | ")
        return Template(prefix=start + enc("prompt:"), mid_a=sep + enc("response a:"),
                        mid_b=sep + enc("response b:"), suffix=sep, turn_sep=turn_sep,
                        text_prefix=start, text_suffix=sep)
    if use_chat_template and getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template([{"role": "user", "content": _CONTENT_MARK}],
                                             add_generation_prompt=True, tokenize=False)
        if text.count(_CONTENT_MARK) != 1:
            raise ConfigError("the tokenizer's chat template does not place the user message "
                              "once; pass --param chat_template=false")
        before, after = text.split(_CONTENT_MARK)
        suffix = enc(after)
    else:
        bos = tokenizer.bos_token or ""
        before, suffix = bos, enc("\n\n# Verdict:") + token("eos")
    head = f"{instruction}\n\n" if instruction else ""
    turn_sep = enc("\n\n") or token("eos")
    return Template(prefix=enc(before + head + "# Prompt\n"), mid_a=enc("\n\n# Response A\n"),
                    mid_b=enc("\n\n# Response B\n"), suffix=suffix, turn_sep=turn_sep,
                    text_prefix=token("bos"), text_suffix=token("eos"))


@dataclass
class TurnTokens:
    """Token ids of turn lists: per row the turns joined by the separator, and turn lengths."""

    ids: pl.Series  # List[Int32] per row
    turn_lengths: pl.Series  # List[Int32] per row, separators included

    @property
    def lengths(self) -> np.ndarray:
        return self.ids.list.len().to_numpy().astype(np.int64)


def tokenize_turns(turns: pl.Series, tokenizer, turn_sep: tuple[int, ...]) -> TurnTokens:
    """Tokenize a column of turn lists; each distinct turn text is tokenized once."""
    n = len(turns)
    long = (pl.DataFrame({"text": turns}).with_row_index("row").explode("text")
            .with_columns(turn=pl.int_range(pl.len()).over("row"),
                          n_turns=pl.len().over("row")))
    uniq = long["text"].unique(maintain_order=True)
    ids = pl.Series("ids", encode_texts(tokenizer, uniq.to_list()), dtype=IDS)
    lookup = pl.DataFrame({"text": uniq, "ids": ids})
    long = long.join(lookup, on="text", how="left", maintain_order="left")
    if turn_sep:
        sep = pl.lit(pl.Series([list(turn_sep)], dtype=IDS))
        long = long.with_columns(
            pl.when(pl.col("turn") < pl.col("n_turns") - 1)
            .then(pl.concat_list(pl.col("ids"), sep)).otherwise(pl.col("ids")).alias("ids"))
    grouped = (long.group_by("row", maintain_order=True)
               .agg(pl.col("ids").explode(empty_as_null=False),
                    pl.col("ids").list.len().alias("lens")))
    if grouped.height != n:
        raise AssertionError("every row has at least one turn")
    return TurnTokens(grouped["ids"].cast(IDS), grouped["lens"].cast(IDS))


def allocate_budgets(n_prompt: np.ndarray, n_a: np.ndarray, n_b: np.ndarray, available: int, *,
                     prompt_share: float, min_response_tokens: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tokens kept of the prompt and of each response, for whole columns of lengths.

    The prompt may take up to ``prompt_share`` of ``available`` (never so much that a response
    would get fewer than ``min_response_tokens``); the responses share the rest equally, a short
    one leaving its unused half to the other; what both leave goes back to the prompt. The rule is
    symmetric: swapping the lengths of A and B swaps their budgets.
    """
    if available < 2 * min_response_tokens:
        raise ConfigError(f"max_length leaves {available} tokens for the texts, fewer than 2 x "
                          f"min_response_tokens={min_response_tokens}; raise max_length")
    n_prompt, n_a, n_b = (np.asarray(x, dtype=np.int64) for x in (n_prompt, n_a, n_b))
    prompt_cap = min(int(prompt_share * available), available - 2 * min_response_tokens)
    kp = np.minimum(n_prompt, prompt_cap)
    room = available - kp
    half = room // 2

    def share(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.where(x + y <= room, x,
                        np.where(x <= half, x, np.where(y <= half, np.minimum(x, room - y), half)))

    ka, kb = share(n_a, n_b), share(n_b, n_a)
    kp = np.minimum(n_prompt, kp + (room - ka - kb))
    return kp, ka, kb


def _keep(ids: pl.Series, lengths: np.ndarray, keep: np.ndarray, side: str) -> pl.Series:
    frame = pl.DataFrame({"ids": ids, "n": lengths, "k": keep})
    start = pl.col("n") - pl.col("k") if side == "left" else pl.lit(0, dtype=pl.Int64)
    return frame.select(pl.col("ids").list.slice(start, pl.col("k")))["ids"]


def _turns_dropped(turn_lengths: pl.Series, keep: np.ndarray, side: str) -> np.ndarray:
    """Turns with no token kept, per row."""
    lens = turn_lengths.explode(empty_as_null=False).to_numpy().astype(np.int64)
    counts = turn_lengths.list.len().to_numpy().astype(np.int64)
    row = np.repeat(np.arange(len(counts)), counts)
    ends = np.cumsum(lens)
    row_start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    ends = ends - np.concatenate([[0], ends])[row_start][row]  # cumulative within the row
    total = ends[np.cumsum(counts) - 1][row]
    k = np.asarray(keep, dtype=np.int64)[row]
    dropped = ends <= total - k if side == "left" else (ends - lens) >= k
    dropped &= lens > 0  # an empty turn is never "cut"
    return np.bincount(row, weights=dropped, minlength=len(counts)).astype(np.int64)


def _literal(ids: tuple[int, ...]) -> pl.Expr:
    return pl.lit(pl.Series([list(ids)], dtype=IDS))


@dataclass
class RenderedPairs:
    """Token ids of rendered pairs (one sequence per row), their budgets and what was cut."""

    ids: pl.Series  # List[Int32]
    full_lengths: np.ndarray  # (n, 3) tokens of prompt, A, B before truncation
    kept: np.ndarray  # (n, 3) tokens kept
    report: pl.DataFrame  # per row: id, tokens, kept, cut and turns dropped per part

    @property
    def lengths(self) -> np.ndarray:
        return self.ids.list.len().to_numpy().astype(np.int64)


def render_pairs(table: PreferenceTable, tokenizer, template: Template, *, max_length: int,
                 prompt_share: float = 0.25, min_response_tokens: int = 8,
                 truncation: str = "left") -> RenderedPairs:
    """Render each row of ``table`` as one sequence of at most ``max_length`` tokens."""
    n = len(table)
    stacked = pl.concat([table.column(p).alias("turns") for p in PARTS])
    tokens = tokenize_turns(stacked, tokenizer, template.turn_sep)
    parts = [TurnTokens(tokens.ids.slice(i * n, n), tokens.turn_lengths.slice(i * n, n))
             for i in range(3)]
    full = np.stack([p.lengths for p in parts], axis=1)
    available = max_length - template.overhead
    if available < 2 * min_response_tokens:
        raise ConfigError(f"max_length={max_length} is too small: the template takes "
                          f"{template.overhead} tokens and each response needs "
                          f"min_response_tokens={min_response_tokens}")
    kept = np.stack(allocate_budgets(full[:, 0], full[:, 1], full[:, 2], available,
                                     prompt_share=prompt_share,
                                     min_response_tokens=min_response_tokens), axis=1)
    pieces = [_keep(p.ids, full[:, i], kept[:, i], truncation) for i, p in enumerate(parts)]
    ids = pl.DataFrame({"p": pieces[0], "a": pieces[1], "b": pieces[2]}).select(
        pl.concat_list(_literal(template.prefix), "p", _literal(template.mid_a), "a",
                       _literal(template.mid_b), "b", _literal(template.suffix)).alias("ids")
    )["ids"].cast(IDS)
    report = pl.DataFrame({"id": table.ids, "tokens": ids.list.len()})
    for i, name in enumerate(("prompt", "a", "b")):
        report = report.with_columns(
            pl.Series(f"{name}_tokens", full[:, i]), pl.Series(f"{name}_kept", kept[:, i]),
            pl.Series(f"{name}_cut", full[:, i] - kept[:, i]),
            pl.Series(f"{name}_turns_dropped",
                      _turns_dropped(parts[i].turn_lengths, kept[:, i], truncation)))
    return RenderedPairs(ids, full, kept, report)


def text_budgets(max_length: int, template: Template, prompt_share: float,
                 min_response_tokens: int) -> tuple[int, int]:
    """Fixed (prompt, response) token budgets of ``encode='texts'`` (the three texts of a pair
    share ``max_length`` between them)."""
    available = max_length - 3 * template.text_overhead
    prompt = int(prompt_share * available)
    response = (available - prompt) // 2
    if response < min_response_tokens:
        raise ConfigError(f"max_length={max_length} leaves {response} tokens per response "
                          f"(< min_response_tokens={min_response_tokens}); raise max_length")
    return max(prompt, 1), response


@dataclass
class RenderedTexts:
    """Distinct texts of a table as sequences, and which text each row's parts are."""

    ids: pl.Series  # List[Int32], one per distinct (role, text)
    index: np.ndarray  # (n, 3) rows of ``ids`` holding each row's prompt, A, B
    full_lengths: np.ndarray  # (n, 3) tokens before truncation
    kept: np.ndarray  # (n, 3)

    @property
    def lengths(self) -> np.ndarray:
        return self.ids.list.len().to_numpy().astype(np.int64)


def render_texts(table: PreferenceTable, tokenizer, template: Template, *, max_length: int,
                 prompt_share: float = 0.25, min_response_tokens: int = 8,
                 truncation: str = "left") -> RenderedTexts:
    """Render each distinct prompt and response alone, with the fixed budgets of
    :func:`text_budgets`; equal texts give one sequence."""
    budget_p, budget_r = text_budgets(max_length, template, prompt_share, min_response_tokens)
    n = len(table)
    key = pl.concat([
        table.column(p).list.join("\x1f").alias("k") for p in PARTS])
    role = np.repeat(np.array([0, 1, 1]), n)  # prompts and responses have different budgets
    frame = pl.DataFrame({"k": key, "role": role}).with_columns(
        (pl.col("role").cast(pl.String) + "\x1e" + pl.col("k")).alias("key"))
    uniq = frame.select("key", "role").unique(subset="key", maintain_order=True).with_row_index("u")
    index = frame.join(uniq.select("key", "u"), on="key", how="left",
                       maintain_order="left")["u"].to_numpy().reshape(3, n).T.astype(np.int64)
    stacked = pl.concat([table.column(p).alias("turns") for p in PARTS])
    first = np.zeros(len(uniq), dtype=np.int64)
    first[index.T.reshape(-1)] = np.arange(3 * n)
    turns = stacked.gather(first)
    tokens = tokenize_turns(turns, tokenizer, template.turn_sep)
    lengths = tokens.lengths
    budget = np.where(uniq["role"].to_numpy() == 0, budget_p, budget_r)
    keep = np.minimum(lengths, budget)
    pieces = _keep(tokens.ids, lengths, keep, truncation)
    ids = pl.DataFrame({"t": pieces}).select(
        pl.concat_list(_literal(template.text_prefix), "t", _literal(template.text_suffix))
        .alias("ids"))["ids"].cast(IDS)
    return RenderedTexts(ids, index, lengths[index], keep[index])


def sequence_digests(ids: pl.Series, salt: str = "") -> list[str]:
    """A content digest of each token sequence (the key of the embedding cache)."""
    flat = ids.explode(empty_as_null=False).to_numpy().astype(np.int32)
    ends = np.cumsum(ids.list.len().to_numpy().astype(np.int64))
    starts = np.concatenate([np.zeros(1, np.int64), ends[:-1]])
    salt_b = salt.encode()
    return [hashlib.blake2b(salt_b + flat[s:e].tobytes(), digest_size=16).hexdigest()
            for s, e in zip(starts, ends, strict=True)]
