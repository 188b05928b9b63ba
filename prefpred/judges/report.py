"""``prefpred evaluate-judge``: the summary (``summary.json``), the table per judge and subset
(``by_subset.csv``) and a self-contained HTML report (figures embedded as base64 PNG, drawn
with matplotlib's Agg canvas; without matplotlib the report has tables only)."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from prefpred.judges.calibrate import calibration_table
from prefpred.judges.evaluate import judge_metrics
from prefpred.judges.io import Judgments
from prefpred.report import CSS, html_table, new_figure, png_img, reliability_img

SUMMARY_KIND, SUMMARY_FORMAT = "prefpred-judge-evaluation", 1
#: The columns of by_subset.csv after judge and subset (metrics of :func:`judge_metrics`).
TABLE_COLUMNS = ("n_pairs", "n_labelled", "n_missing", "n_pairs_with_missing",
                 "accuracy_original", "accuracy_swapped", "accuracy_average", "accuracy_both",
                 "agreement", "agreement_llmbar", "kappa_original", "kappa_swapped",
                 "first_position_share", "mcnemar_p", "tie_verdict_share",
                 "longer_picked_share", "longer_gold_share", "length_bias")
CI_COLUMNS = ("accuracy_original", "accuracy_swapped", "accuracy_average", "accuracy_both",
              "agreement", "first_position_share")
CONVENTIONS = {
    "missing": "a missing verdict (no usable answer) counts as wrong in accuracy_* (as in "
               "LLMBar's evaluation script); accuracy_*_answered leave them out",
    "agreement": "agreement: same verdict in both orders, a missing verdict never agrees; "
                 "agreement_llmbar: LLMBar's 'equal', where two missing verdicts agree",
    "accuracy_average": "mean of the two orders' accuracies (LLMBar's correct_average)",
    "ties": "gold ties are a class; without gold ties, tie verdicts are wrong and their share "
            "is tie_verdict_share",
    "position": "first_position_share: decisive verdicts of both orders picking the response "
                "shown first; mcnemar_p: exact two-sided binomial test on pairs that picked "
                "the first-shown (first_both) vs second-shown (second_both) response in both "
                "orders; mcnemar_chi2 / mcnemar_p_chi2 with continuity correction",
    "length": "longer_picked_share: decisive verdicts picking the longer response; "
              "longer_gold_share: decisive gold labels where it is the better one",
    "intervals": "percentile bootstrap over prompt groups (clusters), seeded",
    "calibration": "out-of-fold (folds grouped by prompt); two-way where gold has no ties",
}


def clean(value: Any) -> Any:
    """JSON-safe: NaN / inf -> None, numpy scalars -> Python."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _block(data: Judgments, n_boot: int, seed: int, level: float, folds: int) -> dict:
    out = judge_metrics(data, n_boot=n_boot, seed=seed, level=level)
    out["calibration"] = calibration_table(data, n_folds=folds, seed=seed)[0]
    return out


def _with_subsets(data: Judgments, n_boot: int, seed: int, level: float, folds: int) -> dict:
    out = {"overall": _block(data, n_boot, seed, level, folds), "subsets": {}}
    for name in sorted(set(data.subset.tolist())):
        out["subsets"][name] = _block(data.take(data.subset == name), n_boot, seed, level, folds)
    return out


def build_summary(data: Judgments, files: list[Path], *, n_boot: int = 1000, seed: int = 0,
                  level: float = 0.95, folds: int = 5, labels: Path | None = None) -> dict:
    """``overall`` and ``subsets`` for the whole input (every judge pooled), and the same per
    judge under ``judges``."""
    summary: dict[str, Any] = {
        "kind": SUMMARY_KIND, "format": SUMMARY_FORMAT,
        "inputs": [str(f) for f in files], "labels": None if labels is None else str(labels),
        "n_boot": n_boot, "seed": seed, "ci_level": level, "conventions": CONVENTIONS,
    }
    summary.update(_with_subsets(data, n_boot, seed, level, folds))
    summary["judges"] = {}
    for judge in sorted(set(data.judge.tolist())):
        summary["judges"][judge] = _with_subsets(data.take(data.judge == judge), n_boot, seed,
                                                 level, folds)
    return clean(summary)


def _calibration_cells(block: dict) -> dict[str, float | None]:
    out: dict[str, float | None] = {"ll_prior": None, "ll_verdict_pairs_uncalibrated": None,
                                    "ll_verdict_pairs": None}
    for row in block.get("calibration", []):
        if row["map"] == "prior":
            out["ll_prior"] = row["log_loss"]
        elif row["map"] == "verdict_pairs":
            key = "ll_verdict_pairs_uncalibrated" if row["method"] == "uncalibrated" \
                else "ll_verdict_pairs"
            out[key] = row["log_loss"]
    return out


def summary_table(summary: dict) -> pl.DataFrame:
    """One row per (judge, subset) with subset ``all`` for each judge (the subsets follow when
    there are several); judge ``ALL`` is the pooled input when there are several judges."""
    rows = []
    scopes = list(summary["judges"].items())
    if len(scopes) > 1:
        scopes = [("ALL", summary), *scopes]
    for judge, scope in scopes:
        subsets = list(scope["subsets"].items()) if len(scope["subsets"]) > 1 else []
        for subset, block in [("all", scope["overall"]), *subsets]:
            row: dict[str, Any] = {"judge": judge, "subset": subset}
            row.update({c: block.get(c) for c in TABLE_COLUMNS})
            for c in CI_COLUMNS:
                lo, hi = block.get("ci", {}).get(c, [None, None])
                row[f"{c}_lo"], row[f"{c}_hi"] = lo, hi
            row.update(_calibration_cells(block))
            rows.append(row)
    return pl.DataFrame(rows, infer_schema_length=None)


# --------------------------------------------------------------------------- HTML
def _html_table(frame: pl.DataFrame) -> str:
    return html_table(frame, digits=3,
                      left=tuple(c for c, t in frame.schema.items() if t == pl.String))


def _accuracy_figure(table: pl.DataFrame, level: float) -> str:
    rows = table.filter(pl.col("subset") == "all")
    names = rows["judge"].to_list()
    fig = new_figure(max(6.0, 1.1 * len(names) + 2), 3.8)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(names))
    width = 0.27
    for i, (col, label) in enumerate((("accuracy_original", "original order"),
                                      ("accuracy_swapped", "swapped order"),
                                      ("accuracy_both", "right in both"))):
        value = np.array([np.nan if v is None else v for v in rows[col].to_list()], dtype=float)
        lo = np.array([np.nan if v is None else v for v in rows[f"{col}_lo"].to_list()], float)
        hi = np.array([np.nan if v is None else v for v in rows[f"{col}_hi"].to_list()], float)
        err = np.vstack([np.nan_to_num(value - lo), np.nan_to_num(hi - value)])
        ax.bar(x + (i - 1) * width, np.nan_to_num(value), width, yerr=err, capsize=3,
               label=label, color=f"C{i}")
    ax.set_xticks(x, names, rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"accuracy ({level:.0%} interval)")
    ax.legend(fontsize=8)
    return png_img(fig)


def _reliability(data: Judgments, seed: int, folds: int) -> str:
    rows, probs, y = calibration_table(data, n_folds=folds, seed=seed)
    chosen = {k: p for k, p in probs.items() if k.startswith("verdict_pairs:")}
    if y is None or not chosen:
        return ("<p class='muted'>no reliability diagram (too few labelled pairs, or a single "
                "gold class)</p>")
    return reliability_img(y, chosen, title="verdict pairs: uncalibrated vote share vs "
                                            "out-of-fold table")


def render_html(summary: dict, table: pl.DataFrame, data: Judgments, *, seed: int,
                folds: int) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Judge evaluation</title>"
             f"<style>{CSS}</style></head><body><h1>Judge evaluation</h1>",
             f"<p class='muted'>{len(data)} judgments from {len(summary['inputs'])} file(s); "
             f"{summary['n_boot']} bootstrap resamples over prompt groups, seed "
             f"{summary['seed']}.</p>"]
    try:
        import matplotlib  # noqa: F401

        figures = True
    except ImportError:
        figures = False
    parts.append("<h2>Accuracy per order</h2>")
    if figures:
        parts.append(_accuracy_figure(table, summary["ci_level"]))
    parts.append(_html_table(table.select(["judge", "subset", *TABLE_COLUMNS[:10],
                                           "first_position_share", "mcnemar_p",
                                           "length_bias"])))
    parts.append("<h2>Calibrated probabilities (out of fold)</h2>")
    for judge, scope in summary["judges"].items():
        cal = scope["overall"].get("calibration", [])
        if cal:
            parts.append(f"<h3>{html.escape(judge)}</h3>")
            parts.append(_html_table(pl.DataFrame(cal)))
            if figures:
                parts.append(_reliability(data.take(data.judge == judge), seed, folds))
    parts.append("<h2>Conventions</h2><ul>" + "".join(
        f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>"
        for k, v in summary["conventions"].items()) + "</ul></body></html>")
    return "\n".join(parts)
