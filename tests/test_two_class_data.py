"""Two-class readers (hh-rlhf, LLMBar, WSDM), the unjudged MT-Bench pool and the competitions
that use them, on the real files of ../shared/data (read independently here)."""

import gzip
import json
from collections import Counter

import polars as pl
import pytest
from conftest import DATA, MT_BENCH

from prefpred.competitions import load_competition, parse_competition
from prefpred.data.formats import detect_format, load_table
from prefpred.data.table import group_keys_from_prompt
from prefpred.errors import ConfigError, DataError
from prefpred.labels import TIE, A, B

HH = DATA / "hh-rlhf-harmless" / "test.jsonl.gz"
LLMBAR = DATA / "llmbar"


def transcript(users, assistants):
    return "".join(f"\n\nHuman: {u}\n\nAssistant: {a}" for u, a in zip(users, assistants,
                                                                          strict=True))


@pytest.fixture(scope="module")
def hh():
    return load_table(HH, "hh-rlhf")


@pytest.fixture(scope="module")
def hh_raw():
    with gzip.open(HH, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def test_hh_rlhf_rows_labels_and_prefix(hh, hh_raw):
    assert len(hh_raw) == 2312
    dropped = hh.quirks.counts[next(k for k in hh.quirks.counts if "do not share" in k)]
    assert len(hh) + dropped == 2312 and dropped == 5
    assert detect_format(HH) == "hh-rlhf" and hh.sources() == ["hh-rlhf-harmless"]
    assert not hh.tie_allowed().any()
    y = hh.labels()
    assert set(y.tolist()) == {A, B}
    assert 0.45 < (y == A).mean() < 0.55  # the side of `chosen` is balanced, not always A
    df = hh.df
    assert (df["prompt"].list.len() == df["response_a"].list.len()).all()
    joined = hh.quirks.counts["consecutive turns of one speaker (joined with a blank line)"]
    exact = 0
    for row in df.iter_rows(named=True):
        raw = hh_raw[int(row["id"].rsplit("-", 1)[1]) - 1]
        chosen_side = "response_a" if row["label"] == A else "response_b"
        rejected_side = "response_b" if row["label"] == A else "response_a"
        # every assistant turn but the last is shared context; the last is where they differ
        assert row[chosen_side][:-1] == row[rejected_side][:-1]
        # the prompt turns are the human turns, in order, of the raw transcripts' shared prefix
        prefix = raw["chosen"][:raw["chosen"].rfind("\n\nAssistant:")]
        assert raw["rejected"].startswith(prefix)
        assert prefix.startswith(f"\n\nHuman: {row['prompt'][0]}")
        if transcript(row["prompt"], row[chosen_side]) == raw["chosen"]:
            assert transcript(row["prompt"], row[rejected_side]) == raw["rejected"]
            exact += 1
    assert joined == 4 and exact == len(hh) - joined  # all but the rows whose turns were joined


def test_hh_rlhf_side_does_not_depend_on_which_is_chosen(tmp_path, hh_raw):
    recs = hh_raw[:40]
    flipped = [{"chosen": r["rejected"], "rejected": r["chosen"]} for r in recs]
    for name, data in (("a.jsonl", recs), ("b.jsonl", flipped)):
        (tmp_path / name).write_text("\n".join(json.dumps(r) for r in data) + "\n")
    a, b = load_table(tmp_path / "a.jsonl", "hh-rlhf"), load_table(tmp_path / "b.jsonl", "hh-rlhf")
    # the same responses sit on the same side; only the label moves
    assert a.df["response_a"].to_list() == b.df["response_a"].to_list()
    assert (a.labels() != b.labels()).all()
    assert detect_format(tmp_path / "a.jsonl") == "hh-rlhf"


@pytest.mark.parametrize("line,match", [
    ('{"chosen": "\\n\\nHuman: hi\\n\\nAssistant: yo"', r"b\.jsonl: row 2: malformed JSON"),
    ('{"chosen": "\\n\\nHuman: hi\\n\\nAssistant: yo"}',
     r"b\.jsonl: row 2, column 'rejected': missing key 'rejected'"),
    ('{"chosen": "\\n\\nHuman: hi", "rejected": "\\n\\nHuman: hi"}',
     r"row 2, column 'chosen': transcript has no"),
])
def test_hh_rlhf_bad_input_is_one_located_line(tmp_path, hh_raw, line, match):
    path = tmp_path / "b.jsonl"
    path.write_text(json.dumps(hh_raw[0]) + "\n" + line + "\n")
    with pytest.raises(DataError, match=match) as err:
        load_table(path, "hh-rlhf", strict=True)
    assert "\n" not in str(err.value)


def test_llmbar_counts_subsets_and_labels():
    files = sorted(LLMBAR.rglob("dataset.json"))
    raw = {f.parent.relative_to(LLMBAR).as_posix(): json.loads(f.read_text()) for f in files}
    t = load_table(LLMBAR)
    assert detect_format(LLMBAR) == "llmbar" and len(t) == 419
    subsets = Counter(i.rsplit("/", 1)[0].split("/", 1)[1] for i in t.ids)
    assert subsets == {"Natural": 100, "Adversarial/Neighbor": 134, "Adversarial/GPTInst": 92,
                       "Adversarial/GPTOut": 47, "Adversarial/Manual": 46}
    assert subsets == {k: len(v) for k, v in raw.items()}
    gold = Counter(r["label"] for rows in raw.values() for r in rows)
    # the files hold 206 / 213 (SOURCES.md states 215 / 204)
    assert Counter(t.labels().tolist()) == {A: gold[1], B: gold[2]}
    assert (gold[1], gold[2]) == (206, 213)
    assert not t.tie_allowed().any() and t.sources() == ["llmbar"]
    assert t.column("model_a").null_count() == 419
    row = t.df.filter(pl.col("id") == "llmbar/Adversarial/Neighbor/17").row(0, named=True)
    src = raw["Adversarial/Neighbor"][16]
    assert (row["prompt"], row["response_a"], row["response_b"]) == (
        [src["input"]], [src["output_1"]], [src["output_2"]])
    assert row["label"] == (A if src["label"] == 1 else B)


def test_llmbar_bad_input(tmp_path):
    rows = json.loads((LLMBAR / "Natural" / "dataset.json").read_text())[:3]
    path = tmp_path / "Natural" / "dataset.json"
    path.parent.mkdir()
    bad = [dict(r) for r in rows]
    bad[1]["label"] = 3
    path.write_text(json.dumps(bad))
    with pytest.raises(DataError, match=r"dataset\.json: row 2, column 'label': label 3 is not"):
        load_table(tmp_path, "llmbar")
    del bad[1]["output_2"]
    bad[1]["label"] = 1
    path.write_text(json.dumps(bad))
    with pytest.raises(DataError, match=r"dataset\.json: row 2, column 'output_2': text is missing"):
        load_table(path, "llmbar")
    del bad[0]["output_2"], bad[2]["output_2"]
    path.write_text(json.dumps(bad))
    with pytest.raises(DataError, match=r"column 'output_2': missing column"):
        load_table(path, "llmbar")
    path.write_text(json.dumps(rows)[:-5])
    with pytest.raises(DataError, match=r"dataset\.json: malformed JSON"):
        load_table(path, "llmbar")


def test_wsdm_rows_are_two_class(tmp_path, kaggle_table):
    kaggle_rows = kaggle_table.df.head(20).to_dicts()
    rows = [{"id": f"w{i}", "prompt": r["prompt"][0], "response_a": r["response_a"][0],
             "response_b": r["response_b"][0], "winner": ["model_a", "model_b"][i % 2]}
            for i, r in enumerate(kaggle_rows)]
    pl.DataFrame(rows).write_parquet(tmp_path / "train.parquet")
    t = load_table(tmp_path / "train.parquet", "wsdm")
    assert not t.tie_allowed().any()
    comp = load_competition("wsdm-cup-multilingual-chatbot-arena")
    assert comp.classes == ("A", "B")


def test_mt_bench_unjudged_pool():
    judged = load_table(MT_BENCH)
    pool = load_table(MT_BENCH, "mt-bench-unjudged")
    raw = [json.loads(x) for x in (MT_BENCH / "human_judgments_turn1.jsonl").read_text().splitlines()
           if x.strip()]
    judged_pairs = {(r["question_id"], frozenset((r["model_a"], r["model_b"]))) for r in raw}
    models = sorted(p.stem for p in (MT_BENCH / "model_answer").glob("*.jsonl"))
    assert pool.n_labelled == 0 and pool.sources() == ["mt-bench-unjudged"]
    pool_pairs = {(int(i.split("-")[1][1:]), frozenset((a, b)))
                  for i, a, b in pool.df.select("id", "model_a", "model_b").iter_rows()}
    assert len(pool_pairs) == len(pool)
    assert not pool_pairs & judged_pairs
    assert len(pool) + len(judged_pairs) == 80 * len(models) * (len(models) - 1) // 2 == 1200
    # the fold group of an unjudged pair is the group of the judged rows of its question
    q_group = dict(zip(judged.df["id"].str.extract(r"^mtbench-q(\d+)-").cast(pl.Int64).to_list(),
                       judged.groups(), strict=True))
    for i, g in zip(pool.ids, pool.groups(), strict=True):
        qid = int(i.split("-")[1][1:])
        if qid in q_group:
            assert g == q_group[qid]
    assert (pool.groups() == group_keys_from_prompt(pool.df).to_numpy()).all()
    # both sides are answered; A is not always the alphabetically first model
    assert 0.2 < (pool.df["model_a"] < pool.df["model_b"]).mean() < 0.8


def test_two_class_competitions_load_and_cross_validate(cli, tmp_path, monkeypatch):
    for name, rows in (("llmbar", 419), ("hh-rlhf-harmless", 2307)):
        t = load_competition(name).load_train()
        assert len(t) == rows and not t.tie_allowed().any()
    both = load_competition("shared-all-twoclass").load_train()
    assert len(both) == 7633 + 419 + 2307
    assert set(both.sources()) >= {"llmbar", "hh-rlhf-harmless", "pandalm", "mt-bench-human"}
    two = ~both.tie_allowed()
    assert set(both.df.filter(pl.Series(two))["source"].unique()) == {"llmbar", "hh-rlhf-harmless"}
    assert not (both.labels()[two] == TIE).any()
    monkeypatch.chdir(tmp_path)
    res = cli("cv", "--competition", "llmbar", "--model", "prior")
    assert res.code == 0, res.err
    assert "0.6931" in res.out  # a 50/50 prior on two-class rows: log 2
    # prefpred run stacks three-way: on two-class data alone it refuses before writing anything
    (tmp_path / "run.toml").write_text(
        '[run]\ncompetition = "llmbar"\nsubmission_competition = "lmsys-chatbot-arena"\n'
        'out_dir = "out"\n[data.holdout]\nfraction = 0.2\n[[models]]\nname = "prior"\n')
    res = cli("run", tmp_path / "run.toml")
    assert res.code == 2 and "without a tie option" in res.err and "prefpred cv" in res.err
    assert len(res.err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_labels_option_is_checked(tmp_path):
    data = {"name": "x", "train": [{"path": "pandalm/testset-v1.json", "format": "pandalm",
                                    "labels": "dawid_skene"}],
            "submission": {"columns": ["id", "a", "b", "t"]}}
    with pytest.raises(ConfigError, match=r"\[\[train\]\] #1 labels 'dawid_skene' unknown "
                                          r"\(did you mean 'dawid-skene'\?\)"):
        parse_competition(data, tmp_path / "x.toml")
    data["train"][0]["labels"] = "shares"
    comp = parse_competition(data, tmp_path / "x.toml")
    t = comp.load_train()
    assert t.df["soft_label"].null_count() == 0
    data["train"][0]["labels"] = "rows"
    with pytest.raises(ConfigError, match="holds 3 votes"):
        parse_competition(data, tmp_path / "x.toml").load_train()
