"""How good is a judge: accuracy in each order, agreement across orders, kappa, position and
length bias, each rate with a bootstrap interval clustered by prompt group.

Conventions (the same as LLMBar's evaluation script, ``LLMEvaluator/evaluate.py`` of
princeton-nlp/LLMBar, so the figures match its ``statistics.json`` files):

- a missing verdict (the judge gave no usable answer) is counted and scored as **wrong** for
  accuracy (``accuracy_*``; ``accuracy_*_answered`` leave them out instead);
- ``accuracy_average`` is the mean of the two orders' accuracies (LLMBar's ``correct_average``,
  the "Acc." of the paper) and ``accuracy_both`` the share right in both orders;
- ``agreement`` is the share of pairs with the same verdict in both orders, a missing verdict
  never agreeing; ``agreement_llmbar`` is LLMBar's ``equal``, where two missing verdicts count
  as agreeing (they differ only for pairs missing in both orders);
- gold ties are a class of their own (a tie verdict is right only on a gold tie); where gold has
  no ties, the share of tie verdicts is reported (``tie_verdict_share``), and they score wrong.

Position bias: ``first_position_share`` is the share of the decisive verdicts (A or B) of both
orders that pick the response shown first. McNemar's test compares "picked response A" between
the two orders (the same pairs): its discordant pairs are the judge picking the first-shown
response both times (``first_both``) or the second-shown both times (``second_both``). The
p-value is the exact two-sided binomial test on them (``mcnemar_p``); the chi-square statistic
with continuity correction and its p-value are given too.

Length bias: ``longer_picked_share`` is the share of decisive verdicts (both orders) that pick
the longer response, ``longer_gold_share`` the share of decisive gold labels where the longer
response is the better one (pairs of equal length left out); ``length_bias`` their difference.

Kappa: Cohen's kappa of the verdicts against gold (a missing verdict is a category of its own),
per order, and between the orders (``kappa_orders``). LLMBar's ``statistics.json`` kappas are
not comparable: its script codes verdict "2" as 0 against labels 1 / 2.

Intervals: percentile bootstrap over prompt groups (the pairs of a group are drawn together),
``n_boot`` resamples (default 1000) from ``numpy.random.default_rng(seed)``, vectorised.
"""

from __future__ import annotations

import math

import numpy as np

from prefpred.judges.io import MISSING, NOT_ASKED, Judgments
from prefpred.labels import CLASSES, TIE, A, B

#: The rates that get a bootstrap interval, as (numerator, denominator) per pair.
RATES = ("accuracy_original", "accuracy_swapped", "accuracy_average", "accuracy_both",
         "accuracy_original_answered", "accuracy_swapped_answered", "agreement",
         "agreement_llmbar", "first_position_share", "tie_verdict_share",
         "longer_picked_share", "longer_gold_share")
#: Differences of two rates that get an interval too.
DIFFERENCES = {"length_bias": ("longer_picked_share", "longer_gold_share")}


def pair_counts(data: Judgments) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per pair, the numerator and denominator of every rate in :data:`RATES` (a rate over a
    set of pairs is sum(num) / sum(den))."""
    y, v1, v2 = data.y.astype(int), data.verdict.astype(int), data.verdict_swapped.astype(int)
    f = np.float64
    lab = (y >= 0).astype(f)
    asked1, asked2 = (v1 != NOT_ASKED).astype(f), (v2 != NOT_ASKED).astype(f)
    ok1 = ((v1 == y) & (y >= 0)).astype(f)
    ok2 = ((v2 == y) & (y >= 0)).astype(f)
    both_asked = asked1 * asked2
    ans1, ans2 = (v1 >= 0).astype(f), (v2 >= 0).astype(f)
    dec1, dec2 = np.isin(v1, (A, B)).astype(f), np.isin(v2, (A, B)).astype(f)
    longer = np.where(data.len_a > data.len_b, A, np.where(data.len_b > data.len_a, B, -9))
    differs = (longer >= 0).astype(f)
    return {
        "accuracy_original": (ok1 * asked1, lab * asked1),
        "accuracy_swapped": (ok2 * asked2, lab * asked2),
        "accuracy_average": ((ok1 + ok2) * both_asked, 2 * lab * both_asked),
        "accuracy_both": (ok1 * ok2 * both_asked, lab * both_asked),
        "accuracy_original_answered": (ok1, lab * ans1),
        "accuracy_swapped_answered": (ok2, lab * ans2),
        "agreement": (((v1 == v2) & (v1 >= 0)) * both_asked, both_asked),
        "agreement_llmbar": ((v1 == v2) * both_asked, both_asked),
        "first_position_share": ((v1 == A) + (v2 == B).astype(f), dec1 + dec2),
        "tie_verdict_share": ((v1 == TIE) + (v2 == TIE).astype(f), ans1 + ans2),
        "longer_picked_share": (((v1 == longer) * dec1 + (v2 == longer) * dec2) * differs,
                                (dec1 + dec2) * differs),
        "longer_gold_share": ((y == longer) * differs, np.isin(y, (A, B)) * differs),
    }


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray | float:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def cluster_bootstrap(num: np.ndarray, den: np.ndarray, groups: np.ndarray, *,
                      n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """Bootstrap replicates (n_boot, m) of the ratio estimates ``sum(num) / sum(den)`` for the m
    columns of ``num`` / ``den`` (n, m), resampling whole groups with replacement (NaN where a
    replicate has no denominator). Vectorised: each replicate is a count vector over groups."""
    num = np.asarray(num, dtype=np.float64).reshape(len(groups), -1)
    den = np.asarray(den, dtype=np.float64).reshape(len(groups), -1)
    _, codes = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    n_groups = int(codes.max()) + 1 if len(codes) else 0
    if n_groups == 0 or n_boot <= 0:
        return np.full((max(n_boot, 0), num.shape[1]), np.nan)
    g_num = np.zeros((n_groups, num.shape[1]))
    g_den = np.zeros((n_groups, num.shape[1]))
    np.add.at(g_num, codes, num)
    np.add.at(g_den, codes, den)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_groups, size=(n_boot, n_groups))
    offsets = (np.arange(n_boot) * n_groups)[:, None]
    counts = np.bincount((draws + offsets).ravel(), minlength=n_boot * n_groups)
    counts = counts.reshape(n_boot, n_groups).astype(np.float64)
    return _ratio(counts @ g_num, counts @ g_den)


def percentile_interval(replicates: np.ndarray, level: float = 0.95) -> list[list[float | None]]:
    """Percentile interval per column of the replicates (None where every replicate is NaN)."""
    alpha = (1.0 - level) / 2
    out = []
    for col in np.atleast_2d(replicates.T):
        col = col[np.isfinite(col)]
        out.append([None, None] if not len(col) else
                   [float(np.quantile(col, alpha)), float(np.quantile(col, 1 - alpha))])
    return out


def mcnemar(first_both: int, second_both: int) -> dict[str, float | int | None]:
    """McNemar's test on the discordant counts: exact two-sided binomial p-value (the primary
    one) and the chi-square statistic with continuity correction, with its p-value."""
    b, c = int(first_both), int(second_both)
    n = b + c
    if n == 0:
        return {"first_both": b, "second_both": c, "mcnemar_p": 1.0, "mcnemar_chi2": 0.0,
                "mcnemar_p_chi2": 1.0}
    from scipy.stats import binom

    tail = float(binom.cdf(min(b, c), n, 0.5))  # the exact binomial tail
    chi2 = (abs(b - c) - 1) ** 2 / n if abs(b - c) >= 1 else 0.0
    p_chi2 = math.erfc(math.sqrt(chi2 / 2))  # chi-square with 1 degree of freedom
    return {"first_both": b, "second_both": c, "mcnemar_p": min(1.0, 2 * tail),
            "mcnemar_chi2": chi2, "mcnemar_p_chi2": p_chi2}


def cohen_kappa(a: np.ndarray, b: np.ndarray) -> float | None:
    """Cohen's kappa of two labellings (codes; a missing verdict is a category of its own)."""
    a, b = np.asarray(a), np.asarray(b)
    if not len(a):
        return None
    cats = np.union1d(a, b)
    po = float(np.mean(a == b))
    pe = float(sum(np.mean(a == c) * np.mean(b == c) for c in cats))
    return None if pe >= 1 else (po - pe) / (1 - pe)


def _value(num: np.ndarray, den: np.ndarray) -> float | None:
    d = float(den.sum())
    return float(num.sum()) / d if d > 0 else None


def judge_metrics(data: Judgments, *, n_boot: int = 1000, seed: int = 0,
                  level: float = 0.95) -> dict:
    """Every metric of the module docstring for one set of judgments (one judge, or pooled)."""
    counts = pair_counts(data)
    v1, v2, y = data.verdict.astype(int), data.verdict_swapped.astype(int), data.y.astype(int)
    asked2 = v2 != NOT_ASKED
    labelled = y >= 0
    out: dict = {
        "n_pairs": len(data),
        "n_labelled": int(labelled.sum()),
        "n_groups": len(np.unique(data.group.astype(str))),
        "two_orders": bool(asked2.any()),
        "n_missing": int((v1 == MISSING).sum() + (v2 == MISSING).sum()),
        "n_missing_original": int((v1 == MISSING).sum()),
        "n_missing_swapped": int((v2 == MISSING).sum()),
        "n_pairs_with_missing": int(((v1 == MISSING) | (v2 == MISSING)).sum()),
        "gold_has_ties": data.gold_has_ties,
        "n_scores_missing": int((~(np.isfinite(data.score_a) & np.isfinite(data.score_b))).sum())
        if data.has_scores else None,
    }
    for name in RATES:
        out[name] = _value(*counts[name])
    for name, (left, right) in DIFFERENCES.items():
        out[name] = (None if out[left] is None or out[right] is None
                     else out[left] - out[right])
    both = labelled & (v1 != NOT_ASKED)
    out["kappa_original"] = cohen_kappa(v1[both], y[both])
    both2 = labelled & asked2
    out["kappa_swapped"] = cohen_kappa(v2[both2], y[both2]) if both2.any() else None
    out["kappa_orders"] = cohen_kappa(v1[asked2], v2[asked2]) if asked2.any() else None
    position = mcnemar(int(((v1 == A) & (v2 == B)).sum()), int(((v1 == B) & (v2 == A)).sum()))
    out.update(position if out["two_orders"] else {k: None for k in position})
    out["n_length_pairs"] = int(counts["longer_gold_share"][1].sum() if data.has_lengths else 0)
    # intervals
    num = np.column_stack([counts[r][0] for r in RATES])
    den = np.column_stack([counts[r][1] for r in RATES])
    reps = cluster_bootstrap(num, den, data.group, n_boot=n_boot, seed=seed)
    cols = {r: reps[:, i] for i, r in enumerate(RATES)}
    for name, (left, right) in DIFFERENCES.items():
        cols[name] = cols[left] - cols[right]
    names = list(cols)
    intervals = percentile_interval(np.column_stack([cols[n] for n in names]), level)
    out["ci"] = {n: iv for n, iv in zip(names, intervals, strict=True)
                 if out.get(n) is not None}
    out["ci_level"] = level
    out["n_boot"] = n_boot
    out["verdict_counts"] = {
        order: {name: int((v == k).sum()) for k, name in [*enumerate(CLASSES),
                                                            (MISSING, "missing")]}
        for order, v in (("original", v1), ("swapped", v2)) if (v != NOT_ASKED).any()}
    return out

