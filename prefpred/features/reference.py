"""A plain per-row Python computation of the same features, for tests and the speed benchmark.

It follows the definitions in :mod:`prefpred.features.build` line by line, one row at a time
with Python's ``re``, ``collections.Counter`` and sets: the polars implementation must agree with
it (the tests check that on real rows), and ``benchmarks/bench_features.py`` measures how much
faster the polars one is. Never used on a hot path.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable

import polars as pl

from prefpred.data.table import PreferenceTable
from prefpred.features.build import (
    _PROMPT_COUNTS,
    _SCRIPTS,
    RATIO_STATS,
    SEP,
    FeatureConfig,
    feature_names,
    log_ratio_stat_names,
    response_stat_names,
)
from prefpred.features.patterns import COUNTED, WORD

_COMPILED = {name: re.compile(p) for name, p in COUNTED.items()}
_WORD = re.compile(WORD)


def _turn_counts(text: str, names: Iterable[str], tokenizer=None) -> dict[str, float]:
    out: dict[str, float] = {}
    for name in names:
        if name == "chars":
            out[name] = len(text)
        elif name == "lines":
            out[name] = text.count("\n") + 1 if text else 0
        elif name == "code_blocks":
            out[name] = text.count("```") // 2
        elif name in _COMPILED:
            out[name] = len(_COMPILED[name].findall(text))
        elif name in ("ngram3", "rep3"):
            toks = _WORD.findall(text.lower())
            n = max(len(toks) - 2, 0)
            out["ngram3"] = n
            out["rep3"] = n - len(set(zip(toks, toks[1:], toks[2:], strict=False)))
        elif name == "hf_tokens":
            out[name] = len(tokenizer.encode(text, add_special_tokens=False).ids)
    return {k: float(v) for k, v in out.items()}


def _with_ratios(counts: dict[str, float]) -> dict[str, float]:
    c = dict(counts)
    if "latin" in c:
        c["script"] = c["latin"] + c["cjk"] + c["cyrillic"]
    for name, (num, den) in RATIO_STATS.items():
        if num in c and den in c:
            c[name] = c[num] / c[den] if c[den] > 0 else 0.0
    return c


def _scopes(turns: list[str], names: tuple[str, ...], tokenizer=None) -> dict[str, dict]:
    per_turn = [_turn_counts(t, names, tokenizer) for t in turns]
    total = {k: sum(d[k] for d in per_turn) for k in per_turn[0]}
    return {"all": _with_ratios(total), "last": _with_ratios(per_turn[-1])}


def _tokens(turns: list[str]) -> list[str]:
    return [tok for t in turns for tok in _WORD.findall(t.lower())]


def _trigrams(turns: list[str]) -> set[str]:
    low = SEP.join(turns).lower()
    return {low[i:i + 3] for i in range(len(low) - 2)}


def _jaccard(x: set, y: set) -> float:
    union = len(x | y)
    return len(x & y) / union if union else 1.0


def _tfidf_cosines(docs: dict[str, list[str]]) -> dict[str, float]:
    tf = {k: Counter(v) for k, v in docs.items()}
    dfreq = Counter(tok for c in tf.values() for tok in c)
    w = {k: {tok: n * (math.log(4.0 / (1.0 + dfreq[tok])) + 1.0) for tok, n in c.items()}
         for k, c in tf.items()}
    norm = {k: math.sqrt(sum(v * v for _, v in sorted(ws.items()))) for k, ws in w.items()}

    def cos(x: str, y: str) -> float:
        if norm[x] * norm[y] <= 0:
            return 0.0
        dot = sum(w[x][t] * w[y][t] for t in sorted(w[x]) if t in w[y])
        return dot / (norm[x] * norm[y])

    return {"ab": cos("a", "b"), "pa": cos("p", "a"), "pb": cos("p", "b")}


def reference_row(prompt: list[str], response_a: list[str], response_b: list[str], source: str,
                  config: FeatureConfig | None = None, tokenizer=None) -> dict[str, float | str]:
    """All features of one row, computed with plain Python."""
    config = config or FeatureConfig()
    counts = config.count_stats()
    row: dict[str, float | str] = {"source": source}
    sides = {"a": response_a, "b": response_b}
    scoped = {k: _scopes(turns, counts, tokenizer) for k, turns in sides.items()}
    p = _scopes(prompt, _PROMPT_COUNTS)
    pall = p["all"]
    row.update({
        "p_turns": float(len(prompt)), "p_chars": pall["chars"], "p_chars_last": p["last"]["chars"],
        "p_words": pall["words"], "p_tokens": pall["tokens"], "p_lines": pall["lines"],
        "p_code": pall["code_blocks"] + pall["inline_code"], "p_question": pall["question"],
        **{f"p_{s}_share": pall[f"{s}_share"] for s in _SCRIPTS},
    })
    toks = {"p": _tokens(prompt), **{k: _tokens(t) for k, t in sides.items()}}
    sets = {k: set(v) for k, v in toks.items()}
    cos = _tfidf_cosines(toks)
    for side in ("a", "b"):
        for scope in ("all", "last"):
            for stat in [*counts, *RATIO_STATS]:
                row[f"{side}_{stat}_{scope}"] = scoped[side][scope][stat]
        sall = scoped[side]["all"]
        row[f"{side}_empty"] = float(sall["words"] == 0)
        row[f"{side}_prompt_overlap"] = (len(sets["p"] & sets[side]) / len(sets["p"])
                                         if sets["p"] else 0.0)
        row[f"{side}_prompt_cos"] = cos["p" + side]
        if pall["script"] > 0 and sall["script"] > 0:
            row[f"{side}_script_mismatch"] = sum(
                abs(pall[f"{s}_share"] - sall[f"{s}_share"]) for s in _SCRIPTS) / 2.0
        else:
            row[f"{side}_script_mismatch"] = 0.0
    row["s_identical"] = float(SEP.join(response_a) == SEP.join(response_b))
    row["s_both_empty"] = row["a_empty"] * row["b_empty"]
    row["s_jaccard_word"] = _jaccard(sets["a"], sets["b"])
    row["s_jaccard_char3"] = _jaccard(_trigrams(response_a), _trigrams(response_b))
    row["s_tfidf_cos"] = cos["ab"]
    for stat in response_stat_names(config):
        row[f"d_{stat}"] = row[f"a_{stat}"] - row[f"b_{stat}"]
    for stat in log_ratio_stat_names(config):
        row[f"lr_{stat}"] = math.log1p(row[f"a_{stat}"]) - math.log1p(row[f"b_{stat}"])
    return row


def reference_features(table: PreferenceTable, config: FeatureConfig | None = None
                       ) -> pl.DataFrame:
    """:func:`prefpred.features.compute_features`, one row at a time in Python."""
    config = config or FeatureConfig()
    tokenizer = None
    if config.tokenizer:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(config.tokenizer)
    rows = [
        reference_row(r["prompt"], r["response_a"], r["response_b"], r["source"], config,
                      tokenizer)
        for r in table.df.select("prompt", "response_a", "response_b", "source").iter_rows(
            named=True)
    ]
    names = feature_names(config)
    return pl.DataFrame(rows, schema={n: pl.String if n == "source" else pl.Float64
                                      for n in names})
