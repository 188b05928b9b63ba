"""The HTML report of a ``prefpred run``: one self-contained file (figures embedded as PNG),
and the reliability diagrams that ``prefpred calibrate`` and ``prefpred stack`` also write."""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from prefpred.io import atomic_path
from prefpred.labels import CLASSES, N_CLASSES
from prefpred.metrics import ece_per_class, log_loss
from prefpred.probabilities import softmax

METRIC_COLUMNS = ("rows", "log_loss", "accuracy", "brier", "ece")

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;
color:#1d2330;line-height:1.45}
h1{margin-bottom:.2rem}h2{margin-top:2.2rem;border-bottom:1px solid #dde;padding-bottom:.2rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem}
th,td{border:1px solid #d5d9e2;padding:.25rem .55rem;text-align:right}
th{background:#f2f4f8}td.l,th.l{text-align:left}
tr.best td{background:#e6f4ea;font-weight:600}
.kpi{display:inline-block;margin:.4rem 1.2rem .4rem 0;padding:.5rem .9rem;border:1px solid #d5d9e2;
border-radius:6px}.kpi b{display:block;font-size:1.4rem}
.muted{color:#667}img{max-width:100%}pre{background:#f6f7f9;padding:.6rem;overflow:auto;font-size:.8rem}
"""


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if np.isnan(v) else f"{v:.{digits}f}"
    return html.escape(str(v))


def html_table(frame: pl.DataFrame, *, highlight: pl.Series | None = None,
               left: tuple[str, ...] = (), digits: int = 4) -> str:
    """A polars frame as an HTML table (floats with ``digits`` decimals, missing cells empty);
    rows where ``highlight`` is true are marked; ``left`` columns are left-aligned."""
    head = "".join(f'<th class="{"l" if c in left else ""}">{html.escape(c)}</th>'
                   for c in frame.columns)
    rows = []
    marks = highlight.to_list() if highlight is not None else [False] * frame.height
    for row, mark in zip(frame.iter_rows(), marks, strict=True):
        cells = "".join(f'<td class="{"l" if c in left else ""}">{_fmt(v, digits)}</td>'
                        for c, v in zip(frame.columns, row, strict=True))
        rows.append(f'<tr class="{"best" if mark else ""}">{cells}</tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def png_img(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return img_tag(buf.getvalue())


def new_figure(width: float = 7.0, height: float = 3.6):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def reliability_curve(y: np.ndarray, proba: np.ndarray, n_bins: int = 15) -> pl.DataFrame:
    """Per class and equal-width bin of the forecast: rows, mean forecast, observed frequency.

    The bins are those of :func:`prefpred.metrics.ece_per_class`: a class's ECE is the
    row-weighted mean of ``|mean_proba - frequency|`` over its bins.
    """
    proba = np.asarray(proba, dtype=np.float64)
    y = np.asarray(y)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    rows = []
    for k, name in enumerate(CLASSES):
        p = proba[:, k]
        bins = np.clip(np.digitize(p, edges[1:-1], right=True), 0, n_bins - 1)
        count = np.bincount(bins, minlength=n_bins)
        sum_p = np.bincount(bins, weights=p, minlength=n_bins)
        hits = np.bincount(bins, weights=(y == k).astype(np.float64), minlength=n_bins)
        for b in np.flatnonzero(count):
            rows.append({"class": name, "bin": int(b), "lower": float(edges[b]),
                         "upper": float(edges[b + 1]), "rows": int(count[b]),
                         "mean_proba": float(sum_p[b] / count[b]),
                         "frequency": float(hits[b] / count[b])})
    return pl.DataFrame(rows, schema={"class": pl.String, "bin": pl.Int64, "lower": pl.Float64,
                                      "upper": pl.Float64, "rows": pl.Int64,
                                      "mean_proba": pl.Float64, "frequency": pl.Float64})


def reliability_png(y: np.ndarray, forecasts: Mapping[str, np.ndarray] | np.ndarray, *,
                    title: str | None = None, n_bins: int = 15) -> bytes:
    """Reliability diagrams (one panel per class, one curve per forecast) as PNG bytes.

    ``forecasts`` maps a label (e.g. ``"uncalibrated"``, ``"temperature"``) to probabilities
    (n, 3). The legend gives each curve's ECE (15 bins); bars under each panel show how many
    rows fall in each bin. Drawn with matplotlib's Agg canvas (no display needed).
    """
    if not isinstance(forecasts, Mapping):
        forecasts = {"forecast": forecasts}
    fig = new_figure(4.2 * N_CLASSES, 5.2)
    grid = fig.add_gridspec(2, N_CLASSES, height_ratios=(3.2, 1), hspace=0.08)
    for k, name in enumerate(CLASSES):
        ax = fig.add_subplot(grid[0, k])
        hist = fig.add_subplot(grid[1, k], sharex=ax)
        ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--")
        for i, (label, proba) in enumerate(forecasts.items()):
            proba = np.asarray(proba, dtype=np.float64)
            curve = reliability_curve(y, proba, n_bins).filter(pl.col("class") == name)
            ece = ece_per_class(y, proba, n_bins)[k]
            color = f"C{i}"
            ax.plot(curve["mean_proba"], curve["frequency"], marker="o", ms=3, color=color,
                    label=f"{label} (ECE {ece:.3f})")
            width = 1.0 / n_bins
            hist.bar(curve["lower"] + width * (i + 0.5) / len(forecasts), curve["rows"],
                     width=width / len(forecasts), color=color, alpha=0.7)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(f"P({name})")
        ax.tick_params(labelbottom=False)
        ax.legend(fontsize=7, loc="upper left")
        hist.set_xlabel("forecast probability")
        if k == 0:
            ax.set_ylabel("observed frequency")
            hist.set_ylabel("rows")
    if title:
        fig.suptitle(title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def write_reliability_png(path: str | Path, y: np.ndarray,
                          forecasts: Mapping[str, np.ndarray] | np.ndarray, *,
                          title: str | None = None) -> Path:
    """:func:`reliability_png` written to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(reliability_png(y, forecasts, title=title))
    return Path(path)


def img_tag(png: bytes, alt: str = "figure") -> str:
    return f'<img alt="{alt}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def reliability_img(y: np.ndarray, forecasts: Mapping[str, np.ndarray], title: str) -> str:
    return img_tag(reliability_png(y, forecasts, title=title), "reliability")


def loss_by_length(y: np.ndarray, lengths: np.ndarray, forecasts: Mapping[str, np.ndarray],
                   n_bins: int = 5) -> pl.DataFrame:
    """Log loss per quantile bin of the pair length (characters of prompt + both responses)."""
    edges = np.unique(np.quantile(lengths, np.linspace(0, 1, n_bins + 1)))
    bins = np.clip(np.searchsorted(edges, lengths, side="right") - 1, 0, len(edges) - 2)
    rows = []
    for b in range(len(edges) - 1):
        m = bins == b
        if not m.any():
            continue
        row = {"length bin (chars)": f"{edges[b]:,.0f}-{edges[b + 1]:,.0f}", "rows": int(m.sum())}
        for name, proba in forecasts.items():
            row[name] = log_loss(y[m], proba[m])
        rows.append(row)
    return pl.DataFrame(rows)


def _length_chart(frame: pl.DataFrame) -> str:
    fig = new_figure()
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(frame.height)
    for col in frame.columns[2:]:
        ax.plot(x, frame[col].to_numpy(), marker="o", label=col)
    ax.axhline(np.log(3), color="0.6", ls="--", lw=1, label="uniform (ln 3)")
    ax.set_xticks(x, frame["length bin (chars)"].to_list(), rotation=20, fontsize=8)
    ax.set_ylabel("log loss (out of fold)")
    ax.legend(fontsize=7)
    return png_img(fig)


def confusion(y: np.ndarray, proba: np.ndarray) -> pl.DataFrame:
    pred = proba.argmax(1)
    rows = []
    for i, true in enumerate(CLASSES):
        m = y == i
        counts = [int(((pred == j) & m).sum()) for j in range(len(CLASSES))]
        rows.append({"true \\ predicted": true, **dict(zip(CLASSES, counts, strict=True)),
                     "rows": int(m.sum()),
                     "recall": counts[i] / max(int(m.sum()), 1)})
    return pl.DataFrame(rows)


def find_importances(work_dirs: Mapping[str, Path]) -> dict[str, pl.DataFrame]:
    """Feature importances saved by models in their work folders (any ``*importance*`` CSV,
    parquet or JSON with a feature column and a numeric column), averaged over files."""
    out = {}
    for label, folder in work_dirs.items():
        folder = Path(folder)
        if not folder.exists():
            continue
        frames = []
        for path in sorted(folder.rglob("*importance*")):
            try:
                if path.suffix == ".csv":
                    frames.append(pl.read_csv(path))
                elif path.suffix == ".parquet":
                    frames.append(pl.read_parquet(path))
                elif path.suffix == ".json":
                    data = json.loads(path.read_text())
                    if isinstance(data, dict) and all(isinstance(v, (int, float))
                                                      for v in data.values()):
                        frames.append(pl.DataFrame({"feature": list(data),
                                                    "importance": list(data.values())}))
                    elif isinstance(data, list):
                        frames.append(pl.DataFrame(data))
            except Exception:  # noqa: BLE001 - an unreadable file is left out of the report
                continue
        frames = [f for f in frames if f.height and f.width >= 2]
        if not frames:
            continue
        name_col = next((c for c in frames[0].columns if frames[0][c].dtype == pl.String), None)
        num_cols = [c for c in frames[0].columns if frames[0][c].dtype.is_numeric()]
        if name_col is None or not num_cols:
            continue
        value = next((c for c in num_cols if "gain" in c), num_cols[0])
        merged = pl.concat([f.select(pl.col(name_col).alias("feature"),
                                     pl.col(value).cast(pl.Float64).alias(value))
                            for f in frames if name_col in f.columns and value in f.columns])
        out[label] = (merged.group_by("feature").agg(pl.col(value).mean())
                      .sort(value, descending=True).head(25))
    return out


def _section(title: str, body: str) -> str:
    return f"<h2>{html.escape(title)}</h2>\n{body}\n"


def _ensemble_section(config, overall: pl.DataFrame) -> str:
    """How each base model predicts the test file (``[ensemble]``) and the out-of-fold
    estimate behind that choice."""
    method = getattr(config, "ensemble", "refit")
    how = {"refit": "one model refitted on all training rows",
           "folds": "the mean of the fold models' logits (a fold ensemble)"}[method]
    if method == "folds" and getattr(config, "average_weights", False):
        how += "; backbone models: one model whose adapter and head weights are the folds' mean"
    rows = []
    for m in config.models:
        hit = overall.filter((pl.col("model") == m.label) & (pl.col("calibration") == "none"))
        loss = f"{hit['log_loss'][0]:.4f}" if hit.height else "-"
        rows.append({"base model": m.label, "test predictions": how,
                     "out-of-fold log loss (fold models)": loss})
    note = ("<p>The out-of-fold estimate is the fold models' own: it is what a fold ensemble "
            "averages; for a refit on all rows (more data, no out-of-fold score of its own) it "
            "is usually a little pessimistic. Weight averaging has no out-of-fold score of "
            "its own either.</p>")
    return _section("Test predictions ([ensemble] method = "
                    f"{html.escape(method)})", html_table(pl.DataFrame(rows),
                                                          left=("base model", "test predictions"))
                    + note)


def render_report(
    *,
    config,
    train,
    data,
    scores: pl.DataFrame,
    oof_logits: Mapping[str, np.ndarray],
    final_model: str,
    final_calibration: str,
    final_oof_calibrated: np.ndarray,
    lengths: np.ndarray,
    holdout_scores: pl.DataFrame | None,
    submission: Path,
    timings: Mapping[str, float],
    started: float | None = None,
    calibrator=None,
    stacker=None,
    work_dirs: Mapping[str, Path] | None = None,
    distillation: pl.DataFrame | None = None,
) -> str:
    """The run report's HTML (see :mod:`prefpred.run`). ``timings`` are the stages so far;
    the report adds its own time and, given the run's ``started`` (``time.perf_counter()``),
    the total."""
    import time

    from prefpred import __version__
    from prefpred.io import git_commit

    t0 = time.perf_counter()
    y = data.y
    final_proba = softmax(final_oof_calibrated)
    overall = scores.filter(pl.col("group") == "ALL").select(
        "model", "calibration", *METRIC_COLUMNS).sort("log_loss")
    final_row = overall.filter((pl.col("model") == final_model)
                               & (pl.col("calibration") == final_calibration)).row(0, named=True)
    parts = [f"<h1>prefpred run: {html.escape(config.name)}</h1>",
             f'<p class="muted">{_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")} · '
             f"prefpred {__version__} · commit {html.escape(str(git_commit(Path(__file__).parent)))}"
             f" · competition {html.escape(config.competition)} · {len(train)} training rows, "
             f"{config.folds or 'default'} folds</p>"]
    kpis = [("final model", f"{final_model} + {final_calibration}"),
            ("out-of-fold log loss", f"{final_row['log_loss']:.4f}"),
            ("accuracy", f"{final_row['accuracy']:.3f}"),
            ("ECE (mean of classes)", f"{final_row['ece']:.4f}")]
    if holdout_scores is not None:
        ho = holdout_scores.filter(pl.col("group") == "ALL").row(0, named=True)
        kpis.append(("held-out test log loss", f"{ho['log_loss']:.4f} ({ho['rows']} rows)"))
    kpis.append(("uniform baseline", f"{np.log(3):.4f}"))
    parts.append("".join(f'<div class="kpi">{html.escape(k)}<b>{html.escape(v)}</b></div>'
                         for k, v in kpis))
    parts.append(f"<p>Submission: <code>{html.escape(str(submission))}</code> (validated; "
                 f"provenance beside it). Every score below is out of fold: base models from "
                 f"grouped K-fold CV, stacks by nested CV, calibrators fitted on the other folds. "
                 f"The final model is the best of these candidates, so its own out-of-fold score "
                 f"is slightly optimistic; the held-out test rows (when there are any) are the "
                 f"unbiased check.</p>")

    parts.append(_ensemble_section(config, overall))
    if distillation is not None:
        d = config.distill
        how = ("nested teacher targets (no fold sees its own labels)" if d.nested
               else "LEAKY out-of-fold teacher targets")
        pseudo = ("" if d.pseudo is None
                  else f", pseudo-labels from <code>{html.escape(d.pseudo)}</code>")
        parts.append(_section(
            "Distillation (out of fold, human labels only)",
            f"<p>Teacher <code>{html.escape(d.teacher)}</code>, alpha {d.alpha}, temperature "
            f"{d.temperature}, {how}{pseudo}.</p>"
            + html_table(distillation, left=("model", "role"))))
    best = (overall["model"] == final_model) & (overall["calibration"] == final_calibration)
    parts.append(_section("Scores of every model, stack and calibration (out of fold, all rows)",
                          html_table(overall, highlight=best, left=("model", "calibration"))))

    per_source = scores.filter(pl.col("calibration") == "none").select(
        "model", "group", "log_loss").pivot(on="model", index="group", values="log_loss")
    final_by_source = scores.filter((pl.col("model") == final_model)
                                    & (pl.col("calibration") == final_calibration)).select(
        "group", pl.col("log_loss").alias(f"FINAL {final_model} + {final_calibration}"),
        pl.col("rows"))
    per_source = final_by_source.join(per_source, on="group", how="left")
    parts.append(_section(
        "Log loss per source (uncalibrated models; the final column is calibrated)",
        html_table(per_source, left=("group",))))

    if holdout_scores is not None:
        parts.append(_section("Held-out test rows (scored against their kept-apart labels)",
                              html_table(holdout_scores.select("group", *METRIC_COLUMNS),
                                         left=("group",))))

    uncal = softmax(oof_logits[final_model])
    parts.append(_section("Reliability (final model, out of fold)", reliability_img(
        y, {"uncalibrated": uncal, final_calibration: final_proba},
        f"{final_model}: before and after {final_calibration}")))

    forecasts = {f"FINAL ({final_calibration})": final_proba}
    forecasts.update({m: softmax(oof_logits[m]) for m in data.logits})
    by_len = loss_by_length(y, lengths, forecasts)
    parts.append(_section("Log loss by pair length (quintiles of prompt + response characters)",
                          _length_chart(by_len) + html_table(by_len,
                                                             left=("length bin (chars)",))))

    parts.append(_section("Confusion matrix (final model, argmax of the calibrated forecast)",
                          html_table(confusion(y, final_proba), left=("true \\ predicted",))))

    importances = find_importances(work_dirs or {})
    if importances:
        body = ""
        for label, frame in importances.items():
            body += f"<h3>{html.escape(label)} (top {frame.height}, mean over fits)</h3>"
            body += html_table(frame, left=("feature",))
        parts.append(_section("Feature importances", body))

    params = {}
    if calibrator is not None:
        params["calibrator"] = calibrator.to_dict()
    if stacker is not None:
        state = stacker.to_dict()
        state["state"] = {k: (v if len(json.dumps(v, default=str)) < 2000 else "(large, omitted)")
                          for k, v in state.get("state", {}).items()}
        params["stacker"] = state
    if params:
        parts.append(_section("Fitted calibrator and stacker",
                              f"<pre>{html.escape(json.dumps(params, indent=1, default=str))}</pre>"))

    timings = {**timings, "report": time.perf_counter() - t0}
    if started is not None:
        timings["total"] = time.perf_counter() - started
    timing = pl.DataFrame({"stage": list(timings), "seconds": [float(v) for v in timings.values()]})
    parts.append(_section("Timings", html_table(timing, left=("stage",))))
    if config.file is not None and Path(config.file).exists():
        parts.append(_section("Configuration",
                              f"<pre>{html.escape(Path(config.file).read_text())}</pre>"))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>prefpred run "
            f"{html.escape(config.name)}</title><style>{CSS}</style></head><body>"
            + "\n".join(parts) + "</body></html>\n")
