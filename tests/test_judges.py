"""``prefpred evaluate-judge``: readers on the real LLMBar files, figures checked by hand and
against the LLMBar authors' own statistics, the bootstrap's coverage, McNemar against scipy,
calibrated probabilities, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from prefpred.competitions import data_root

LLMBAR = data_root() / "llmbar"
SUBSETS = {"Natural": 100, "Adversarial/Neighbor": 134, "Adversarial/GPTInst": 92,
           "Adversarial/GPTOut": 47, "Adversarial/Manual": 46}
ORDERS = ("swap = False", "swap = True")


def result_file(subset: str, judge: str, strategy: str = "Vanilla") -> Path:
    return LLMBAR / subset / "evaluators" / judge / strategy / "result.json"


def by_hand(path: Path) -> dict:
    """LLMBar's counts with plain json and loops (independent of prefpred)."""
    rows = json.loads(path.read_text())
    n = len(rows)
    right = {o: 0 for o in ORDERS}
    both = equal = agree = first = decisive = missing = 0
    for r in rows:
        label = str(r["label"])
        w = [r["results"][-1][o]["winner"] for o in ORDERS]
        for o, v in zip(ORDERS, w, strict=True):
            right[o] += v == label
        both += w[0] == label and w[1] == label
        equal += w[0] == w[1]
        agree += w[0] == w[1] and w[0] is not None
        missing += sum(v is None for v in w)
        # first shown: "1" in the original order, "2" in the swapped one
        first += (w[0] == "1") + (w[1] == "2")
        decisive += sum(v is not None for v in w)
    return {"n_pairs": n, "n_missing": missing,
            "accuracy_original": right[ORDERS[0]] / n, "accuracy_swapped": right[ORDERS[1]] / n,
            "accuracy_average": (right[ORDERS[0]] + right[ORDERS[1]]) / 2 / n,
            "accuracy_both": both / n, "agreement": agree / n, "agreement_llmbar": equal / n,
            "first_position_share": first / decisive}


@pytest.fixture(scope="module")
def everything():
    from prefpred.judges.io import read_judgments

    return read_judgments([LLMBAR])


def test_llmbar_readers_on_the_real_files(everything):
    data, files = everything
    assert len(files) == 40  # 6 judges x 5 subsets Vanilla + 2 judges x 5 subsets Rating
    for judge in sorted(set(data.judge.tolist())):
        rows = data.take(data.judge == judge)
        assert len(rows) == 419
        assert {s: int((rows.subset == s).sum()) for s in SUBSETS} == SUBSETS
        assert (rows.y >= 0).all() and not rows.gold_has_ties
    # null verdicts of the Vanilla files, counted by hand: SOURCES.md says 5, the files hold
    # 10 null verdicts in 6 pairs (PaLM2: 8 in 4 pairs, LLaMA2: 2 in 2 pairs)
    nulls, pairs = 0, 0
    for path in LLMBAR.rglob("Vanilla/result.json"):
        for r in json.loads(path.read_text()):
            k = sum(r["results"][-1][o]["winner"] is None for o in ORDERS)
            nulls, pairs = nulls + k, pairs + (k > 0)
    vanilla = data.take(np.array([j.endswith("/Vanilla") for j in data.judge]))
    assert (nulls, pairs) == (10, 6)
    assert int((vanilla.verdict == -1).sum() + (vanilla.verdict_swapped == -1).sum()) == nulls
    # Rating: scores parsed, the two content-filtered GPT-4 scores are missing
    rating = data.take(data.judge == "GPT-4/Rating")
    assert rating.has_scores and int(np.isnan(rating.score_a + rating.score_b).sum()) == 2
    assert set(rating.score_a[np.isfinite(rating.score_a)]) <= set(range(11))
    # lengths and prompt groups: the same prompt is one group in every judge
    gpt4 = data.take(data.judge == "GPT-4/Vanilla")
    raw = json.loads((LLMBAR / "Natural" / "dataset.json").read_text())
    nat = gpt4.take(gpt4.subset == "Natural")
    assert nat.len_a.tolist() == [len(r["output_1"]) for r in raw]
    assert nat.ids[3] == "Natural/3" and len(set(gpt4.group.tolist())) == 418


CASES = [("Natural", "GPT-4", "Vanilla"), ("Natural", "PaLM2", "Vanilla"),
         ("Adversarial/GPTInst", "LLaMA2", "Vanilla"), ("Adversarial/Manual", "PaLM2", "Vanilla"),
         ("Adversarial/GPTOut", "ChatGPT", "Vanilla"), ("Adversarial/Neighbor", "GPT-4", "Rating"),
         ("Adversarial/GPTOut", "Falcon", "Vanilla")]


def test_command_matches_hand_counts_and_published_statistics(cli, tmp_path):
    files = [result_file(*c) for c in CASES]
    res = cli("evaluate-judge", "--judgments", *files, "--out", tmp_path / "out",
              "--bootstrap", "200")
    assert res.code == 0, res.err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    for (subset, judge, strategy), path in zip(CASES, files, strict=True):
        got = summary["judges"][f"{judge}/{strategy}"]
        block = got["subsets"].get(subset, got["overall"])
        for key, value in by_hand(path).items():
            assert block[key] == pytest.approx(value, abs=1e-12), (judge, subset, key)
    # Published by the LLMBar authors: Dataset/LLMBar/<subset>/evaluators/<judge>/<strategy>/
    # statistics.json of princeton-nlp/LLMBar @ caa7bee794bfed74baed038b99229fa3f0c4c511
    # (written by LLMEvaluator/evaluate.py; correct_False / correct_True / correct_both / equal
    # as counts; the paper's Acc. is correct_average and its Agr. is equal).
    published = {
        ("Natural", "GPT-4/Vanilla"): (95, 96, 93, 95, 100),
        ("Natural", "PaLM2/Vanilla"): (78, 88, 73, 80, 100),
        ("Adversarial/GPTInst", "LLaMA2/Vanilla"): (28, 28, 16, 67, 92),
        ("Adversarial/Manual", "PaLM2/Vanilla"): (32, 28, 27, 40, 46),
        ("Adversarial/GPTOut", "ChatGPT/Vanilla"): (17, 22, 10, 28, 47),
        ("Adversarial/Neighbor", "GPT-4/Rating"): (104, 105, 90, 105, 134),
    }
    for (subset, judge), (c0, c1, cb, eq, n) in published.items():
        got = summary["judges"][judge]["subsets"][subset]
        assert got["accuracy_original"] == pytest.approx(c0 / n)
        assert got["accuracy_swapped"] == pytest.approx(c1 / n)
        assert got["accuracy_average"] == pytest.approx((c0 + c1) / 2 / n)
        assert got["accuracy_both"] == pytest.approx(cb / n)
        assert got["agreement_llmbar"] == pytest.approx(eq / n)
    # PaLM2 Natural: two pairs have no verdict in either order: LLMBar counts them as agreeing
    palm = summary["judges"]["PaLM2/Vanilla"]["subsets"]["Natural"]
    assert palm["n_missing"] == 4 and palm["agreement"] == pytest.approx(0.78)
    assert palm["accuracy_original_answered"] == pytest.approx(78 / 98)
    # intervals contain the estimate; a by_subset row per judge and subset; the report
    for block in (palm, summary["overall"]):
        for key, (lo, hi) in block["ci"].items():
            assert lo <= block[key] <= hi, key
    table = pl.read_csv(tmp_path / "out" / "by_subset.csv")
    assert table.filter((pl.col("judge") == "GPT-4/Vanilla") & (pl.col("subset") == "all"))[
        "accuracy_both"].item() == pytest.approx(0.93)
    page = (tmp_path / "out" / "report.html").read_text()
    assert "<img" in page and "GPT-4/Vanilla" in page


def test_cluster_bootstrap_covers_the_true_rate():
    from prefpred.judges.evaluate import cluster_bootstrap, percentile_interval

    rng = np.random.default_rng(7)
    true, hits = 0.7, 0
    for rep in range(200):
        sizes = rng.integers(1, 6, size=60)
        p_group = rng.beta(7 * 2, 3 * 2, size=60)  # mean 0.7, clustered
        groups = np.repeat(np.arange(60), sizes)
        num = (rng.random(len(groups)) < p_group[groups]).astype(float)
        reps = cluster_bootstrap(num, np.ones_like(num), groups, n_boot=400, seed=rep)
        (lo, hi), = percentile_interval(reps, 0.90)
        hits += lo <= true <= hi
    assert 0.84 <= hits / 200 <= 0.96


def test_mcnemar_and_kappa_against_oracles():
    from scipy.stats import binomtest, chi2
    from sklearn.metrics import cohen_kappa_score

    from prefpred.judges.evaluate import cohen_kappa, mcnemar

    for b, c in ((15, 5), (1, 28), (3, 2), (0, 7), (40, 61), (0, 0)):
        got = mcnemar(b, c)
        if b + c:
            assert got["mcnemar_p"] == pytest.approx(binomtest(b, b + c, 0.5).pvalue, rel=1e-9)
            stat = (abs(b - c) - 1) ** 2 / (b + c)
            assert got["mcnemar_chi2"] == pytest.approx(stat)
            assert got["mcnemar_p_chi2"] == pytest.approx(chi2.sf(stat, 1), rel=1e-9)
        else:
            assert got["mcnemar_p"] == 1.0
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
    b[:120] = a[:120]
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b))


def _synthetic(n: int = 300, seed: int = 0) -> pl.DataFrame:
    """A judge with gold ties, a first-position lean, overconfident token probabilities."""
    rng = np.random.default_rng(seed)
    y = rng.choice(3, size=n, p=[0.4, 0.35, 0.25])
    words = {0: "model_a", 1: "model_b", 2: "tie"}
    right = rng.random(n) < 0.7
    v1 = np.where(right, y, rng.choice(3, size=n))
    v2 = np.where(rng.random(n) < 0.7, y, rng.choice(3, size=n))
    logits = 4.0 * np.eye(3)[v1] + rng.normal(0, 1, (n, 3))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    margin = np.where(y == 0, 1.0, np.where(y == 1, -1.0, 0.0)) + rng.normal(0, 1, n)
    v1_words = [words[int(v)] for v in v1]
    v1_words[0] = ""  # a missing verdict
    return pl.DataFrame({
        "id": [f"p{i}" for i in range(n)], "label": ["A" if k == 0 else "B" if k == 1 else "tie"
                                                    for k in y],
        "verdict": v1_words, "verdict_swapped": [str(v + 1) if v < 2 else "draw" for v in v2],
        "p_a": p[:, 0], "p_b": p[:, 1], "p_tie": p[:, 2],
        "score_a": margin, "score_b": np.zeros(n),
        "group": [f"g{i // 2}" for i in range(n)], "subset": ["x" if i % 3 else "y"
                                                              for i in range(n)],
        "response_a": ["a" * (1 + i % 7) for i in range(n)],
        "response_b": ["b" * 4 for _ in range(n)]})


def test_judgments_file_three_way_calibration(cli, tmp_path):
    frame = _synthetic()
    path = tmp_path / "judge.csv"
    frame.write_csv(path)
    res = cli("evaluate-judge", "--judgments", path, "--out", tmp_path / "out",
              "--bootstrap", "100")
    assert res.code == 0, res.err
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    o = s["overall"]
    y = frame["label"].str.to_lowercase().replace({"a": "model_a", "b": "model_b"}).to_list()
    v1 = frame["verdict"].to_list()
    assert o["gold_has_ties"] and o["n_missing"] == 1
    assert o["accuracy_original"] == pytest.approx(np.mean([a == b for a, b in zip(v1, y, strict=True)]))
    cal = {(r["map"], r["method"]): r for r in o["calibration"]}
    assert {r["classes"] for r in cal.values()} == {3}
    prior = cal[("prior", "class prior (out of fold)")]["log_loss"]
    assert cal[("verdict_pairs", "add-1 table")]["log_loss"] < prior
    for name in ("rao-kupper", "davidson", "multinomial"):
        assert cal[("scores", name)]["log_loss"] < prior
    tokens = cal[("token_probabilities", "temperature")]["log_loss"]
    assert tokens < cal[("token_probabilities", "uncalibrated")]["log_loss"]
    assert set(s["subsets"]) == {"x", "y"} and o["n_length_pairs"] > 0
    # the same judgments as parquet with log-probabilities and as JSON lines read the same
    from prefpred.judges.io import read_judgments

    csv, _ = read_judgments([path])
    logs = frame.with_columns([pl.col(f"p_{c}").log().alias(f"logp_{c}") for c in ("a", "b")]
                              + [pl.col("p_tie").log().alias("logp_tie")]
                              ).drop("p_a", "p_b", "p_tie")
    logs.write_parquet(tmp_path / "judge.parquet")
    frame.write_ndjson(tmp_path / "judge.jsonl")
    for other in ("judge.parquet", "judge.jsonl"):
        got, _ = read_judgments([tmp_path / other])
        assert (got.verdict == csv.verdict).all() and (got.y == csv.y).all()
        assert (got.verdict_swapped == csv.verdict_swapped).all()
        assert np.allclose(got.logp, csv.logp)


def test_two_way_maps_and_reward_scores_file(cli, tmp_path):
    from prefpred.judges.calibrate import calibration_table
    from prefpred.judges.io import read_judgments

    frame = _synthetic(seed=1).filter(pl.col("label") != "tie")
    frame.drop("verdict").write_csv(tmp_path / "tokens.csv")  # verdict from the scores
    data, _ = read_judgments([tmp_path / "tokens.csv"])
    # without scores, the verdict is the argmax of the token probabilities
    frame.drop("verdict", "score_a", "score_b").write_csv(tmp_path / "probs.csv")
    only_probs, _ = read_judgments([tmp_path / "probs.csv"])
    assert only_probs.verdict.tolist() == frame.select("p_a", "p_b", "p_tie").to_numpy(
    ).argmax(1).tolist()
    rows = {(r["map"], r["method"]): r for r in calibration_table(data)[0]}
    assert {r["classes"] for r in rows.values()} == {2}
    assert rows[("token_probabilities", "temperature")]["log_loss"] < \
        rows[("prior", "class prior (out of fold)")]["log_loss"]
    assert rows[("scores", "logistic")]["log_loss"] < \
        rows[("prior", "class prior (out of fold)")]["log_loss"]
    # a prefpred reward-scores file: one order only, the verdict is the higher reward
    scores = frame.select("id", reward_a="score_a", reward_b="score_b", label="label",
                          group="group")
    scores.write_csv(tmp_path / "scores.csv")
    res = cli("evaluate-judge", "--judgments", tmp_path / "scores.csv", "--out",
              tmp_path / "out", "--bootstrap", "50")
    assert res.code == 0, res.err
    o = json.loads((tmp_path / "out" / "summary.json").read_text())["overall"]
    want = np.mean((frame["score_a"] > 0).to_numpy() == (frame["label"] == "A").to_numpy())
    assert o["accuracy_original"] == pytest.approx(want)
    assert o["accuracy_swapped"] is None and o["agreement"] is None and not o["two_orders"]


def test_labels_file_replaces_gold(cli, tmp_path):
    path = result_file("Adversarial/GPTOut", "GPT-4")
    rows = json.loads(path.read_text())
    flipped = pl.DataFrame({"id": [f"Adversarial/GPTOut/{i}" for i in range(len(rows))],
                            "label": ["2" if r["label"] == 1 else "1" for r in rows]})
    flipped.write_csv(tmp_path / "labels.csv")
    res = cli("evaluate-judge", "--judgments", path, "--labels", tmp_path / "labels.csv",
              "--out", tmp_path / "out", "--bootstrap", "20")
    assert res.code == 0, res.err
    got = json.loads((tmp_path / "out" / "summary.json").read_text())["overall"]
    assert got["accuracy_original"] == pytest.approx(1 - by_hand(path)["accuracy_original"])


def _bad_llmbar(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name / "Sub" / "evaluators" / "J" / "Vanilla" / "result.json"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    return path


def test_bad_input_is_one_line_and_writes_nothing(cli, tmp_path):
    good = json.loads(result_file("Adversarial/Manual", "GPT-4").read_text())[:3]
    no_key = [dict(r) for r in good]
    del no_key[1]["label"]
    odd = json.loads(json.dumps(good))
    odd[2]["results"][-1]["swap = True"]["winner"] = "3"
    no_text = json.loads(json.dumps(good))
    no_text[1]["input"] = None
    twice = json.dumps(good).replace('"label": ', '"label": 2, "label": ', 1)
    cases = {
        "malformed": (_bad_llmbar(tmp_path, "m", json.dumps(good)[:-20]), "not valid JSON"),
        "repeated key": (_bad_llmbar(tmp_path, "r", twice), "column 'label': the object repeats"),
        "null input": (_bad_llmbar(tmp_path, "i", json.dumps(no_text)),
                       "row 2, column 'input': expected a string"),
        "missing key": (_bad_llmbar(tmp_path, "k", json.dumps(no_key)), "row 2, column 'label'"),
        "unknown winner": (_bad_llmbar(tmp_path, "w", json.dumps(odd)), "'3' is not a known"),
    }
    table = tmp_path / "judge.csv"
    pl.DataFrame({"id": ["a", "b"], "label": ["A", "B"], "verdict": ["A", "maybe"]}
                 ).write_csv(table)
    cases["unknown word"] = (table, "judge.csv: row 2, column 'verdict'")
    rewards = tmp_path / "rewards.csv"  # "1" would mean B here, the first response elsewhere
    pl.DataFrame({"id": ["a", "b"], "reward_a": [0.1, 0.2], "reward_b": [0.3, 0.0],
                  "label": ["A", "1"]}).write_csv(rewards)
    cases["numeric reward label"] = (rewards, "row 2, column 'label': a numeric label is ambig")
    for what, (path, message) in cases.items():
        out = tmp_path / f"out-{what.replace(' ', '-')}"
        res = cli("evaluate-judge", "--judgments", path, "--out", out)
        assert res.code == 2, what
        assert message in res.err and res.err.strip().count("\n") == 0, (what, res.err)
        assert not out.exists(), what
    # labels that do not cover the judged ids
    labels = tmp_path / "labels.csv"
    pl.DataFrame({"id": ["Natural/0"], "label": ["1"]}).write_csv(labels)
    res = cli("evaluate-judge", "--judgments", result_file("Natural", "GPT-4"), "--labels", labels,
              "--out", tmp_path / "out-labels")
    assert res.code == 2 and "judged ids are not in the labels file" in res.err
    assert not (tmp_path / "out-labels").exists()
    # an output that is (or holds) an input
    for out in (table, tmp_path):
        res = cli("evaluate-judge", "--judgments", table, "--out", out)
        assert res.code == 2 and "input" in res.err and res.err.strip().count("\n") == 0
    # nothing anywhere below: no output folder, no temporary file left behind
    assert [p for p in tmp_path.rglob("*") if p.name.startswith((".", "out-"))] == []
