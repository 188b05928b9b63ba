"""Labels rebuilt from individual votes: rows, majority, shares, Dawid-Skene (prefpred.data.votes),
on the real MT-Bench and PandaLM votes and on simulated annotators with known confusion."""

import json
from collections import Counter, defaultdict

import numpy as np
import polars as pl
import pytest
from conftest import MT_BENCH, PANDALM

from prefpred.data.formats import load_table
from prefpred.data.table import PreferenceTable
from prefpred.data.votes import MERGED_SUFFIX, dawid_skene, rebuild_labels
from prefpred.errors import ConfigError, DataError
from prefpred.labels import TIE, A, B

WINNER = {"model_a": A, "model_b": B}


@pytest.fixture(scope="module")
def mtbench():
    return load_table(MT_BENCH)


@pytest.fixture(scope="module")
def pandalm():
    return load_table(PANDALM)


def simulate(seed=0, n=1500, accuracies=(0.9, 0.75, 0.55, 0.4, 0.35), per_item=3):
    """Votes of annotators with known confusion matrices (accuracy on the diagonal, the rest
    spread evenly), each item judged by ``per_item`` of them."""
    rng = np.random.default_rng(seed)
    k = 3
    truth = rng.choice(k, n, p=[0.45, 0.4, 0.15])
    conf = np.array([np.eye(k) * a + (1 - a) / (k - 1) * (1 - np.eye(k)) for a in accuracies])
    item, judge, label = [], [], []
    for i in range(n):
        for j in rng.choice(len(accuracies), per_item, replace=False):
            item.append(i)
            judge.append(j)
            label.append(rng.choice(k, p=conf[j, truth[i]]))
    return truth, conf, np.array(item), np.array(judge), np.array(label)


def test_dawid_skene_recovers_known_annotators_better_than_majority():
    truth, conf, item, judge, label = simulate()
    n, n_judges = len(truth), conf.shape[0]
    post, prior, est = dawid_skene(item, judge, label, n_items=n, n_judges=n_judges)
    counts = np.zeros((n, 3))
    np.add.at(counts, (item, label), 1)
    rng = np.random.default_rng(1)  # majority with random tie-breaking
    majority = (counts + rng.random(counts.shape) * 1e-3).argmax(1)
    ds_acc, mv_acc = (post.argmax(1) == truth).mean(), (majority == truth).mean()
    assert ds_acc > mv_acc + 0.08, (ds_acc, mv_acc)
    # each annotator's accuracy is recovered, the good ones told from the poor ones
    diag = est[:, np.arange(3), np.arange(3)].mean(1)
    assert np.abs(diag - conf[:, 0, 0]).max() < 0.08
    assert np.allclose(post.sum(1), 1) and np.allclose(prior.sum(), 1)
    again = dawid_skene(item, judge, label, n_items=n, n_judges=n_judges)[0]
    assert np.array_equal(post, again)  # deterministic


def loop_dawid_skene(item, judge, label, n_items, n_judges, n_iter):
    """Dawid and Skene's EM written out plainly, one vote at a time (the oracle): start from
    the vote shares, then M-step (class prior, each judge's confusion rows) and E-step."""
    post = np.zeros((n_items, 3))
    for i, lab in zip(item, label, strict=True):
        post[i, lab] += 1
    post /= post.sum(1, keepdims=True)
    for _ in range(n_iter):
        prior = post.mean(0)
        conf = np.zeros((n_judges, 3, 3))
        for i, j, lab in zip(item, judge, label, strict=True):
            conf[j, :, lab] += post[i]
        conf /= np.maximum(conf.sum(2, keepdims=True), 1e-300)
        logp = np.tile(np.log(prior), (n_items, 1))
        for i, j, lab in zip(item, judge, label, strict=True):
            logp[i] += np.log(np.maximum(conf[j, :, lab], 1e-300))
        logp -= logp.max(1, keepdims=True)
        post = np.exp(logp) / np.exp(logp).sum(1, keepdims=True)
    return post


def test_dawid_skene_matches_a_plain_loop_implementation():
    # (the vectorised EM also matched crowd-kit's DawidSkene to 1e-10 when it was written; crowd-kit
    # is not a dependency: it pulls an unpinned transformers)
    _, conf, item, judge, label = simulate(seed=3, n=200)
    for n_iter in (1, 5, 40):
        ours = dawid_skene(item, judge, label, n_items=200, n_judges=conf.shape[0],
                           smoothing=0.0, max_iter=n_iter, tol=0.0)[0]
        oracle = loop_dawid_skene(item, judge, label, 200, conf.shape[0], n_iter)
        assert np.abs(oracle - ours).max() < 1e-8


def test_rows_is_the_table_as_read(mtbench):
    assert rebuild_labels(mtbench, "rows") is mtbench
    raw = [json.loads(x) for x in (MT_BENCH / "human_judgments_turn1.jsonl").read_text().splitlines()
           if x.strip()]
    assert len(mtbench) == len(raw) == 1689
    votes = mtbench.df["votes"].to_list()
    assert votes == [[{"judge": r["judge"], "label": {**WINNER}.get(r["winner"], TIE)}]
                     for r in raw]
    assert mtbench.labels().tolist() == [v[0]["label"] for v in votes]


def test_mt_bench_merges_votes_per_question_and_pair(mtbench):
    raw = [json.loads(x) for x in (MT_BENCH / "human_judgments_turn1.jsonl").read_text().splitlines()
           if x.strip()]
    expected = defaultdict(Counter)  # (question, sorted models) -> votes for the sorted order
    for r in raw:
        lo, hi = sorted((r["model_a"], r["model_b"]))
        won = {"model_a": r["model_a"], "model_b": r["model_b"]}.get(r["winner"])
        expected[(r["question_id"], lo, hi)][{lo: "lo", hi: "hi"}.get(won, "tie")] += 1
    shares = rebuild_labels(mtbench, "shares")
    assert len(shares) == len(expected) == 910
    group_of_question = dict(zip(mtbench.ids, mtbench.groups(), strict=True))
    for row in shares.df.iter_rows(named=True):
        qid = int(row["id"].split("-")[1][1:])
        lo, hi = sorted((row["model_a"], row["model_b"]))
        want = expected[(qid, lo, hi)]
        n = sum(want.values())
        a_key = "lo" if row["model_a"] == lo else "hi"
        b_key = "hi" if a_key == "lo" else "lo"
        assert list(row["soft_label"]) == pytest.approx(
            [want[a_key] / n, want[b_key] / n, want["tie"] / n])
        assert len(row["votes"]) == n
        assert row["id"].endswith(MERGED_SUFFIX) == (n > 1)
        first_id = row["id"].removesuffix(MERGED_SUFFIX)
        assert group_of_question[first_id] == row["group"]  # the fold group is kept
    assert shares.df["group"].n_unique() == 80
    assert rebuild_labels(mtbench, "shares").ids == shares.ids  # deterministic ids
    # majority: the most voted class, TIE when classes tie, weight = agreement share
    maj = rebuild_labels(mtbench, "majority")
    soft = np.stack(shares.df["soft_label"].to_numpy())
    top = soft.max(1)
    split = (soft == top[:, None]).sum(1) > 1
    assert (maj.labels()[split] == TIE).all()
    assert (maj.labels()[~split] == soft.argmax(1)[~split]).all()
    assert np.allclose(maj.weights(), top)
    ds = rebuild_labels(mtbench, "dawid-skene")
    post = np.stack(ds.df["soft_label"].to_numpy())
    assert np.allclose(post.sum(1), 1) and (ds.labels() == post.argmax(1)).all()
    assert ds.ids == shares.ids


def test_pandalm_votes_shares_and_majority(pandalm):
    raw = json.loads(PANDALM.read_text())
    code = {0: TIE, 1: A, 2: B}
    votes = pandalm.df["votes"].to_list()
    assert votes[0] == [{"judge": f"annotator{j}", "label": code[raw[0][f"annotator{j}"]]}
                        for j in (1, 2, 3)]
    # majority is the table as read; shares are the vote shares, nothing merged
    assert rebuild_labels(pandalm, "majority").df.equals(pandalm.df)
    shares = rebuild_labels(pandalm, "shares")
    counts = np.zeros((len(raw), 3))
    for i, r in enumerate(raw):
        for j in (1, 2, 3):
            counts[i, code[int(r[f"annotator{j}"])]] += 1
    assert np.allclose(np.stack(shares.df["soft_label"].to_numpy()), counts / 3)
    assert shares.ids == pandalm.ids and (shares.weights() == 1).all()
    with pytest.raises(ConfigError, match="holds 3 votes"):
        rebuild_labels(pandalm, "rows")
    with pytest.raises(ConfigError, match=r"labels 'share' unknown \(did you mean 'shares'\?\)"):
        rebuild_labels(pandalm, "share")


def test_votes_survive_swap(pandalm):
    swapped = pandalm.swap()
    flip = {A: B, B: A, TIE: TIE}
    for before, after in zip(pandalm.df["votes"].to_list(), swapped.df["votes"].to_list(),
                             strict=True):
        assert after == [{"judge": v["judge"], "label": flip[v["label"]]} for v in before]
    for mode in ("shares", "dawid-skene"):
        a = np.stack(rebuild_labels(swapped, mode).df["soft_label"].to_numpy())
        b = np.stack(rebuild_labels(pandalm, mode).swap().df["soft_label"].to_numpy())
        assert np.allclose(a, b, atol=1e-9)


def small_table(votes, tie_allowed=True, source="s"):
    n = len(votes)
    return PreferenceTable.from_frame(pl.DataFrame({
        "id": [f"r{i}" for i in range(n)], "prompt": [[f"p{i}"] for i in range(n)],
        "response_a": [["a"]] * n, "response_b": [["b"]] * n,
        "votes": [[{"judge": j, "label": v} for j, v in row] for row in votes],
        "label": [A] * n, "tie_allowed": [tie_allowed] * n,
        "source": [source] * n}))


def test_two_class_votes_keep_no_tie_mass():
    rows = [[("x", A), ("y", B)], [("x", B), ("y", B)], [("x", A), ("y", A)], [("x", B), ("y", A)]]
    t = small_table(rows, tie_allowed=False)
    for mode in ("majority", "shares", "dawid-skene"):
        r = rebuild_labels(t, mode)
        assert not (r.labels() == TIE).any()
        if mode != "majority":
            assert (np.stack(r.df["soft_label"].to_numpy())[:, TIE] == 0).all()
    # an even split on a two-class row takes the first vote's side
    assert rebuild_labels(t, "majority").labels().tolist() == [A, B, A, B]
    with pytest.raises(DataError, match="row 1, column 'votes': a vote is TIE"):
        rebuild_labels(small_table([[("x", TIE)]], tie_allowed=False), "shares")


def test_labels_modes_that_cannot_apply_are_refused(kaggle_table):
    # one judge: Dawid-Skene cannot separate its errors from the truth (it used to turn every
    # label into one class)
    one_judge = small_table([[("x", A)], [("x", B)], [("x", TIE)], [("x", A)]])
    with pytest.raises(ConfigError, match="source 's' .* has one"):
        rebuild_labels(one_judge, "dawid-skene")
    assert rebuild_labels(one_judge, "shares").labels().tolist() == [A, B, TIE, A]
    # a source without votes: a labels mode would silently change nothing
    for mode in ("rows", "majority", "shares", "dawid-skene"):
        with pytest.raises(ConfigError, match="no votes to rebuild labels from"):
            rebuild_labels(kaggle_table.take(np.arange(5)), mode)


def test_rows_without_votes_are_untouched(mtbench, kaggle_table):
    both = PreferenceTable.concat([kaggle_table.take(np.arange(50)), mtbench])
    for mode in ("majority", "shares", "dawid-skene"):
        out = rebuild_labels(both, mode)
        assert out.df.head(50).drop("soft_label").equals(both.df.head(50).drop("soft_label"))
        assert out.df.head(50)["soft_label"].null_count() == 50
        assert len(out) == 50 + 910
