"""Labels rebuilt from the individual votes of a table (its ``votes`` column).

A competition TOML chooses per source (``[[train]] labels = ...``); rows without votes are kept
as they are in every mode:

- ``rows``: one row per vote, as MT-Bench is read (each judge's vote its own row, in the
  question's fold group). Refused for rows holding several votes (PandaLM).
- ``majority``: one row per judged pair, labelled with the most voted class; when classes tie
  for the most votes the label is TIE (PandaLM's rule, so ``majority`` on PandaLM is exactly the
  table as read); on a row judged without a tie option it is the first vote's class. Weight =
  the share of votes agreeing with the label.
- ``shares``: one row per pair, ``soft_label`` = the vote shares, label = the majority as above,
  weight 1 (the disagreement is in the target already).
- ``dawid-skene``: one row per pair, ``soft_label`` = the Dawid-Skene posterior of the true
  class given every vote, from per-judge confusion matrices learned by EM over all pairs of that
  source (:func:`dawid_skene`); label = its most probable class, weight 1. Sources judged
  without a tie option are fitted on the classes A and B only.

"One row per pair" merges the rows of one source that share the prompt and the same unordered
pair of (model, response) sides, as MT-Bench's several judges of one question and model pair
give: the merged row is the first such row (its orientation, group, models) with every vote
mapped to that orientation; its id is the first row's id + ``~merged`` when several rows were
merged, the first row's id otherwise. Rows keep the order of their first row.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import polars as pl

from prefpred.data.table import PreferenceTable
from prefpred.errors import ConfigError, DataError
from prefpred.labels import N_CLASSES, TIE, A, B

LABEL_MODES: Final[tuple[str, ...]] = ("rows", "majority", "shares", "dawid-skene")
MERGED_SUFFIX: Final[str] = "~merged"
_SEP = "\x1f"


def check_mode(mode: str, where: str = "labels") -> str:
    """``mode`` if it is one of :data:`LABEL_MODES`, else a one-line ConfigError with the closest."""
    from prefpred.schema import closest

    if mode not in LABEL_MODES:
        raise ConfigError(f"{where} {mode!r} unknown{closest(str(mode), LABEL_MODES)}; "
                          f"known: {list(LABEL_MODES)}")
    return mode


# --------------------------------------------------------------------------- Dawid-Skene
def dawid_skene(item: np.ndarray, judge: np.ndarray, label: np.ndarray, *, n_items: int,
                n_judges: int, n_classes: int = N_CLASSES, smoothing: float = 0.5,
                max_iter: int = 100, tol: float = 1e-6
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dawid & Skene (1979) by EM over votes ``(item[v], judge[v], label[v])``.

    Starts from each item's vote shares (majority vote), then alternates the M-step (class
    priors and one confusion matrix per judge, ``confusion[j, true, said]``, each cell plus
    ``smoothing`` pseudo-votes) and the E-step (posterior of each item's true class), at most
    ``max_iter`` rounds, stopping once no posterior moves more than ``tol``. Deterministic.
    Returns (posterior (n_items, K), priors (K,), confusion (n_judges, K, K)).
    """
    item, judge, label = (np.asarray(x, dtype=np.int64) for x in (item, judge, label))
    k = n_classes
    counts = np.zeros((n_items, k))
    np.add.at(counts, (item, label), 1.0)
    if (counts.sum(1) == 0).any():
        raise ValueError("every item needs at least one vote")
    post = counts / counts.sum(1, keepdims=True)
    eps = 1e-10
    for _ in range(max_iter):
        prior = np.clip((post.sum(0) + smoothing) / (n_items + k * smoothing), eps, None)
        conf = np.full((n_judges, k, k), float(smoothing))
        np.add.at(conf, (judge, slice(None), label), post[item])
        conf = np.clip(conf, eps, None)
        conf /= conf.sum(2, keepdims=True)
        log_post = np.tile(np.log(prior), (n_items, 1))
        np.add.at(log_post, item, np.log(conf[judge, :, label]))
        log_post -= log_post.max(1, keepdims=True)
        new = np.exp(log_post)
        new /= new.sum(1, keepdims=True)
        moved = float(np.abs(new - post).max())
        post = new
        if moved < tol:
            break
    return post, prior, conf


# --------------------------------------------------------------------------- merging
def _keys(df: pl.DataFrame) -> pl.DataFrame:
    """Item key and orientation side of each row (the strings that decide what merges)."""
    def side(model: str, response: str) -> pl.Expr:
        return pl.col(model).fill_null("") + _SEP + pl.col(response).list.join(_SEP)

    side_a, side_b = side("model_a", "response_a"), side("model_b", "response_b")
    lo = pl.when(side_a <= side_b).then(side_a).otherwise(side_b)
    hi = pl.when(side_a <= side_b).then(side_b).otherwise(side_a)
    key = pl.concat_str([pl.col("source"), pl.col("group"), pl.col("prompt").list.join(_SEP), lo, hi],
                        separator="\x1e")
    return df.select(key.alias("key"), side_a.alias("side_a"))


def merge_votes(table: PreferenceTable) -> PreferenceTable:
    """One row per judged pair: rows with votes that share source, group, prompt and the
    unordered pair of sides merged into the first, votes oriented to it (labels untouched)."""
    df = table.df.with_row_index("__i")
    voted = df.filter(pl.col("votes").is_not_null())
    if voted.height == 0:
        return table
    keys = _keys(voted)
    voted = voted.with_columns(keys["key"].alias("__key"), keys["side_a"].alias("__side"))
    voted = voted.with_columns(
        (pl.col("__side") != pl.col("__side").first().over("__key")).alias("__flip"))
    vote = pl.element().struct.field("label")
    swapped = pl.col("votes").list.eval(pl.struct(
        pl.element().struct.field("judge"),
        pl.when(vote == A).then(pl.lit(B, pl.Int8)).when(vote == B).then(pl.lit(A, pl.Int8))
        .otherwise(vote).alias("label")))
    voted = voted.with_columns(pl.when(pl.col("__flip")).then(swapped).otherwise(pl.col("votes"))
                               .alias("votes"))
    agg = voted.group_by("__key", maintain_order=True).agg(
        pl.col("__i").first(), pl.col("votes").explode(), pl.len().alias("__n"))
    firsts = df.join(agg.select("__i", "__n", pl.col("votes").alias("__votes")), on="__i",
                     how="inner")
    firsts = firsts.with_columns(
        votes=pl.col("__votes"),
        id=pl.when(pl.col("__n") > 1).then(pl.col("id") + MERGED_SUFFIX).otherwise(pl.col("id")),
    ).drop("__votes", "__n")
    rest = df.filter(pl.col("votes").is_null())
    out = pl.concat([firsts, rest]).sort("__i").drop("__i")
    return PreferenceTable.from_frame(out, file=table.origin, quirks=table.quirks)


# --------------------------------------------------------------------------- labels
def vote_counts(table: PreferenceTable) -> np.ndarray:
    """(n, 3) votes per class per row (zeros for rows without votes)."""
    exploded = (table.df.select(pl.int_range(pl.len()).alias("row"), "votes")
                .filter(pl.col("votes").is_not_null()).explode("votes"))
    counts = np.zeros((len(table), N_CLASSES))
    np.add.at(counts, (exploded["row"].to_numpy(),
                       exploded["votes"].struct.field("label").to_numpy().astype(np.int64)), 1.0)
    return counts


def _majority(counts: np.ndarray, two_class: np.ndarray, first_vote: np.ndarray) -> np.ndarray:
    top = counts.max(1, keepdims=True)
    split = (counts == top).sum(1) > 1
    label = np.where(split, TIE, counts.argmax(1))
    return np.where(split & two_class, first_vote, label)


def _first_votes(table: PreferenceTable) -> np.ndarray:
    first = table.df["votes"].list.first().struct.field("label")
    return first.fill_null(-1).to_numpy().astype(np.int64)


def _check_two_class_votes(table: PreferenceTable, counts: np.ndarray) -> np.ndarray:
    two_class = ~table.tie_allowed()
    bad = two_class & (counts[:, TIE] > 0)
    if bad.any():
        raise DataError("a vote is TIE on a row judged without a tie option", file=table.origin,
                        row=int(np.flatnonzero(bad)[0]) + 1, column="votes")
    return two_class


def _dawid_skene_posteriors(table: PreferenceTable, has: np.ndarray) -> np.ndarray:
    """Per source, a Dawid-Skene posterior for each row with votes (NaN rows elsewhere)."""
    df = table.df.select(pl.int_range(pl.len()).alias("row"), "source", "votes", "tie_allowed")
    out = np.full((len(table), N_CLASSES), np.nan)
    for source in sorted(set(df.filter(pl.Series(has))["source"].to_list())):
        part = df.filter(pl.Series(has) & (pl.col("source") == source))
        rows = part["row"].to_numpy()
        votes = part.select(pl.int_range(pl.len()).alias("item"), "votes").explode("votes")
        judges = votes["votes"].struct.field("judge").fill_null("").to_list()
        names = sorted(set(judges))
        if len(names) < 2:  # one judge: its errors cannot be told from the truth
            raise ConfigError(f"labels 'dawid-skene' estimates each judge's errors from several "
                              f"judges, but source {source!r} of {table.origin} has one; use "
                              "'majority' or 'shares'")
        judge = np.searchsorted(np.array(names), np.array(judges))
        label = votes["votes"].struct.field("label").to_numpy().astype(np.int64)
        two_class = ~part["tie_allowed"].to_numpy().astype(bool)
        classes = [A, B] if two_class.all() else list(range(N_CLASSES))
        local = np.searchsorted(np.array(classes), label)
        post, _, _ = dawid_skene(votes["item"].to_numpy(), judge, local, n_items=len(rows),
                                 n_judges=len(names), n_classes=len(classes))
        full = np.zeros((len(rows), N_CLASSES))
        full[:, classes] = post
        full[two_class, TIE] = 0.0
        full /= full.sum(1, keepdims=True)
        out[rows] = full
    return out


def rebuild_labels(table: PreferenceTable, mode: str) -> PreferenceTable:
    """The table with labels rebuilt from its votes by ``mode`` (see the module doc)."""
    check_mode(mode)
    has = ~table.df["votes"].is_null().to_numpy()
    if not has.any():
        raise ConfigError(f"labels {mode!r}: {table.origin} has no votes to rebuild labels from "
                          "(one label per pair); remove the labels key for this source")
    if mode == "rows":
        several = has & (table.df["votes"].list.len().fill_null(0).to_numpy() > 1)
        if several.any():
            row = int(np.flatnonzero(several)[0]) + 1
            raise ConfigError(f"labels 'rows' keeps one row per vote, but row {row} of "
                              f"{table.origin} holds {int(table.df['votes'].list.len()[row - 1])} "
                              "votes; use 'majority', 'shares' or 'dawid-skene'")
        return table
    table = merge_votes(table)
    has = ~table.df["votes"].is_null().to_numpy()
    counts = vote_counts(table)
    two_class = _check_two_class_votes(table, counts)
    total = np.maximum(counts.sum(1, keepdims=True), 1.0)
    label = _majority(counts, two_class, _first_votes(table))
    weight = counts.max(1) / total[:, 0] if mode == "majority" else np.ones(len(table))
    soft = None
    if mode == "shares":
        soft = counts / total
    elif mode == "dawid-skene":
        soft = _dawid_skene_posteriors(table, has)
        label = soft.argmax(1) if has.all() else np.where(has, np.nan_to_num(soft).argmax(1), 0)
    df = table.df
    new_label = np.where(has, label, df["label"].fill_null(-1).to_numpy())
    columns: dict[str, pl.Series] = {
        "label": pl.Series([int(v) if v >= 0 else None for v in new_label], dtype=pl.Int8),
        "weight": pl.Series(np.where(has, weight, df["weight"].to_numpy()), dtype=pl.Float64),
    }
    if soft is not None:
        rebuilt = pl.Series([list(map(float, s)) for s in soft], dtype=pl.Array(pl.Float64,
                                                                               N_CLASSES))
        columns["soft_label"] = pl.select(pl.when(pl.lit(pl.Series(has))).then(pl.lit(rebuilt))
                                          .otherwise(pl.lit(df["soft_label"]))).to_series()
    return table.with_columns(**columns)
