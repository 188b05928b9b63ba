"""Every format adapter, on real rows of the shared data (or files built from them in the
published schema where no real file of that schema ships here)."""

import json
import re

import numpy as np
import polars as pl
import pytest
from conftest import AUTOJ, DATA, KAGGLE, LLMEVAL2, MT_BENCH, PANDALM

from prefpred.data.formats import detect_format, load_table
from prefpred.data.mapped import ColumnMap, read_mapped
from prefpred.data.sources.benchmarks import split_transcript
from prefpred.errors import DataError

REAL = [(KAGGLE, "kaggle-lmsys"), (MT_BENCH, "mt-bench"), (AUTOJ, "autoj"),
        (PANDALM, "pandalm"), (LLMEVAL2, "llmeval2")]


def published_counts(path) -> tuple[int, tuple[int, int, int]]:
    """Rows and A / B / tie counts of a data folder as ../shared/data/SOURCES.md states them
    (its table: | `folder/...` | rows | labels (A / B / tie) | ...), independent of our readers."""
    folder = path.relative_to(DATA).parts[0]
    for line in (DATA / "SOURCES.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > 2 and cells[0].startswith(f"`{folder}"):
            rows = int(re.search(r"[\d,]+", cells[1])[0].replace(",", ""))
            labels = [int(v.replace(",", "")) for v in re.findall(r"[\d,]+", cells[2])]
            return rows, tuple(labels[-3:])
    raise AssertionError(f"{folder} is not in SOURCES.md's table")


@pytest.mark.parametrize("path,fmt", REAL, ids=[r[1] for r in REAL])
def test_real_files_load_with_published_label_counts(path, fmt):
    rows, labels = published_counts(path)
    assert detect_format(path) == fmt
    table = load_table(path)
    assert len(table) == rows
    assert tuple(np.bincount(table.labels(), minlength=3)) == labels
    assert table.df["prompt"].list.len().min() >= 1


def test_kaggle_quirks_are_handled(kaggle_table):
    t = kaggle_table
    q = t.quirks.counts
    # null entries in turn lists become empty strings, counted
    assert q["null turns in response_a (read as empty text)"] == 2
    assert q["null turns in response_b (read as empty text)"] == 3
    assert q["multi-turn rows"] == 125
    assert q["empty response_b"] == 2
    # the unnamed leading index column is dropped; ids are the Kaggle ids, as text
    assert t.ids[0] == "2785062085"
    row = t.df.filter(pl.col("prompt").list.len() > 1).row(0, named=True)
    assert len(row["prompt"]) == len(row["response_a"]) == len(row["response_b"])
    # a null turn of the raw file is read as empty text, in its place
    raw = pl.read_csv(KAGGLE, infer_schema=False)
    cells = [json.loads(c) for c in raw["response_b"].to_list()]
    i = next(i for i, turns in enumerate(cells) if None in turns)
    expected = ["" if turn is None else turn for turn in cells[i]]
    assert t.df["response_b"][i].to_list() == expected
    # the models are read from the file as they are
    assert t.column("model_a").to_list() == raw["model_a"].to_list()


def test_kaggle_test_file_has_no_labels(tmp_path):
    df = pl.read_csv(KAGGLE, infer_schema=False).head(20)
    test = tmp_path / "test.csv"
    df.select("id", "prompt", "response_a", "response_b").write_csv(test)
    t = load_table(test)
    assert len(t) == 20 and t.n_labelled == 0
    assert t.labels().tolist() == [-1] * 20


def test_lone_surrogate_escapes_are_repaired_or_rejected(tmp_path):
    df = pl.read_csv(KAGGLE, infer_schema=False).drop("").head(5)
    df = df.with_columns(pl.when(pl.int_range(pl.len()) == 2)
                         .then(pl.lit('["broken emoji \\ud83d here", null]'))
                         .otherwise(pl.col("response_a")).alias("response_a"))
    path = tmp_path / "s.csv"
    df.write_csv(path)
    t = load_table(path)
    assert t.df["response_a"][2].to_list() == ["broken emoji \ufffd here", ""]
    assert t.quirks.counts["lone surrogate escapes replaced with U+FFFD"] == 1
    t.write_parquet(tmp_path / "ok.parquet")  # encodable as UTF-8 now
    with pytest.raises(DataError, match="row 3, column 'response_a'.*surrogate"):
        load_table(path, strict=True)


def test_paired_surrogate_escapes_decode_to_emoji(tmp_path):
    df = pl.read_csv(KAGGLE, infer_schema=False).drop("").head(3)
    df = df.with_columns(pl.lit('["smile \\ud83d\\ude0a"]').alias("prompt"))
    df.write_csv(tmp_path / "e.csv")
    assert load_table(tmp_path / "e.csv").df["prompt"][0].to_list() == ["smile \U0001f60a"]


def test_hf_arena_55k_parquet(tmp_path):
    """lmsys/lmsys-arena-human-preference-55k ships the Kaggle columns as parquet (int ids)."""
    df = pl.read_csv(KAGGLE, infer_schema=False).drop("").head(30)
    df = df.with_columns(pl.col("id").cast(pl.Int64),
                         *[pl.col(c).cast(pl.Int64) for c in ("winner_model_a", "winner_model_b",
                                                              "winner_tie")])
    df.write_parquet(tmp_path / "train.parquet")
    t = load_table(tmp_path / "train.parquet")
    ref = load_table(KAGGLE)
    assert t.ids == ref.ids[:30]
    assert t.labels().tolist() == ref.labels()[:30].tolist()
    assert t.df["prompt"].to_list() == ref.df["prompt"][:30].to_list()


def _conversation(prompt, response):
    conv = []
    for p, r in zip(prompt, response, strict=True):
        conv += [{"role": "user", "content": p}, {"role": "assistant", "content": r}]
    return conv


@pytest.fixture
def kaggle_rows(kaggle_table):
    return kaggle_table.df.head(40).to_dicts()


def test_arena_conversations_100k_schema(tmp_path, kaggle_rows):
    winners = ["model_a", "model_b", "tie", "both_bad"]
    rows = [{
        "id": f"r{i}", "model_a": r["model_a"], "model_b": r["model_b"],
        "winner": winners[i % 4],
        "conversation_a": _conversation(r["prompt"], r["response_a"]),
        "conversation_b": _conversation(r["prompt"], r["response_b"]),
        "turn": len(r["prompt"]), "language": "English",
    } for i, r in enumerate(kaggle_rows)]
    pl.DataFrame(rows).write_parquet(tmp_path / "arena100k.parquet")
    t = load_table(tmp_path / "arena100k.parquet")
    assert detect_format(tmp_path / "arena100k.parquet") == "arena-conversations"
    assert t.labels().tolist()[:4] == [0, 1, 2, 2]
    assert t.quirks.counts["both-bad votes counted as ties"] == 10
    assert t.df["prompt"].to_list() == [r["prompt"] for r in kaggle_rows]
    assert t.df["response_b"].to_list() == [r["response_b"] for r in kaggle_rows]
    assert t.column("language")[0] == "English"


def test_chatbot_arena_conversations_schema(tmp_path, kaggle_rows):
    """lmsys/chatbot_arena_conversations: question_id, winner incl. 'tie (bothbad)', JSONL."""
    lines = []
    for i, r in enumerate(kaggle_rows[:12]):
        lines.append(json.dumps({
            "question_id": f"q{i // 2}", "model_a": r["model_a"], "model_b": r["model_b"],
            "winner": ["model_a", "tie (bothbad)", "model_b", "tie"][i % 4], "judge": "arena_user",
            "conversation_a": _conversation(r["prompt"], r["response_a"]),
            "conversation_b": _conversation(r["prompt"], r["response_b"]),
            "turn": 1, "anony": True, "language": "English",
        }))
    path = tmp_path / "conversations.jsonl"
    path.write_text("\n".join(lines) + "\n")
    t = load_table(path)
    assert len(t) == 12 and len(set(t.ids)) == 12  # question ids repeat: made unique
    assert t.labels().tolist()[:4] == [0, 2, 1, 2]


def test_arena_140k_content_parts(tmp_path, kaggle_rows):
    def parts(conv):
        return [{"role": m["role"], "content": [{"type": "text", "text": m["content"]}]}
                for m in conv]

    rows = [{"id": str(i), "winner": "model_a",
             "conversation_a": parts(_conversation(r["prompt"], r["response_a"])),
             "conversation_b": parts(_conversation(r["prompt"], r["response_b"]))}
            for i, r in enumerate(kaggle_rows[:5])]
    path = tmp_path / "a140k.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    t = load_table(path, "arena-conversations")
    assert t.df["response_a"].to_list() == [r["response_a"] for r in kaggle_rows[:5]]


def test_wsdm_parquet(tmp_path, kaggle_rows):
    rows = [{"id": f"w{i}", "prompt": "\n".join(r["prompt"]), "response_a": "\n".join(r["response_a"]),
             "response_b": "\n".join(r["response_b"]), "winner": ["model_a", "model_b"][i % 2],
             "model_a": r["model_a"], "model_b": r["model_b"], "language": "Russian"}
            for i, r in enumerate(kaggle_rows)]
    pl.DataFrame(rows).write_parquet(tmp_path / "train.parquet")
    t = load_table(tmp_path / "train.parquet")
    assert detect_format(tmp_path / "train.parquet") == "wsdm"
    assert set(t.labels().tolist()) == {0, 1}
    assert t.column("language").unique().to_list() == ["Russian"]
    # the test file has neither winner nor model columns
    pl.DataFrame(rows).select("id", "prompt", "response_a", "response_b").write_parquet(
        tmp_path / "test.parquet")
    t2 = load_table(tmp_path / "test.parquet", "wsdm")
    assert t2.n_labelled == 0


def test_mt_bench_joins_questions_and_answers():
    t = load_table(MT_BENCH)
    row = t.df.row(0, named=True)
    q81 = json.loads((MT_BENCH / "question.jsonl").read_text().splitlines()[0])
    assert row["prompt"] == q81["turns"][:1]
    answer = next(json.loads(line) for line in
                  (MT_BENCH / "model_answer" / f"{row['model_a']}.jsonl").read_text().splitlines()
                  if json.loads(line)["question_id"] == 81)
    assert row["response_a"] == answer["choices"][0]["turns"][:1]
    # one group per question
    assert t.df["group"].n_unique() == 80


def test_mt_bench_turn_two_and_missing_answer(tmp_path):
    import shutil

    shutil.copytree(MT_BENCH, tmp_path / "mt")
    lines = (tmp_path / "mt" / "human_judgments_turn1.jsonl").read_text().splitlines()[:3]
    recs = [json.loads(x) for x in lines]
    recs[1]["turn"] = 2
    (tmp_path / "mt" / "human_judgments_turn1.jsonl").write_text(
        "\n".join(json.dumps(r) for r in recs) + "\n")
    t = load_table(tmp_path / "mt")
    assert t.df["prompt"].list.len().to_list() == [1, 2, 1]
    assert t.groups()[0] == t.groups()[1]  # same question, same group, whatever the turn
    recs[2]["model_b"] = "no-such-model"
    (tmp_path / "mt" / "human_judgments_turn1.jsonl").write_text(
        "\n".join(json.dumps(r) for r in recs) + "\n")
    with pytest.raises(DataError, match="row 3, column 'model_b'.*no answer by no-such-model"):
        load_table(tmp_path / "mt")


def test_pandalm_majority_weight_and_nan_input(tmp_path):
    t = load_table(PANDALM)
    raw = json.loads(PANDALM.read_text())
    w = t.weights()
    assert set(np.round(w, 4).tolist()) == {1.0, 0.6667}
    assert int((w < 1).sum()) == 120  # rows where one annotator disagreed
    r0 = raw[0]
    assert t.df["prompt"][0].to_list() == [r0["instruction"] + "\n\n" + r0["input"]]
    assert t.labels()[0] == 1  # annotators voted 2 = response2 better
    # the published file sometimes has a bare NaN token as input, and can split three ways
    rec = [dict(r) for r in raw[:4]]
    rec[1]["input"] = "@NAN@"
    rec[2].update(annotator1=0, annotator2=1, annotator3=2)
    path = tmp_path / "p.json"
    path.write_text(json.dumps(rec, indent=4).replace('"@NAN@"', "NaN"))
    assert '"input": NaN' in path.read_text()
    t2 = load_table(path)
    assert t2.df["prompt"][1].to_list() == [raw[1]["instruction"]]
    assert t2.quirks.counts["input is NaN/null (treated as absent)"] == 1
    assert t2.labels()[2] == 2 and abs(t2.weights()[2] - 1 / 3) < 1e-9


def test_llmeval2_languages_and_transcripts():
    t = load_table(LLMEVAL2)
    langs = dict(t.df.group_by("language").len().iter_rows())
    assert langs["zh"] == 160 and langs["ru"] == 160 and langs["pt"] == 160
    assert t.quirks.counts["empty query, prompt recovered from user/assistant transcripts"] == 232
    multi = t.df.filter(pl.col("prompt").list.len() == 2).row(0, named=True)
    assert len(multi["response_a"]) == 2
    assert not multi["response_a"][0].startswith("user:")


def test_split_transcript():
    assert split_transcript("user: hi\n\nassistant: hello\n\nuser: more\n\nassistant: ok") == (
        ["hi", "more"], ["hello", "ok"])
    assert split_transcript("no roles here") is None
    assert split_transcript("user: a\n\nuser: b") is None


def test_autoj_rows_match_file():
    t = load_table(AUTOJ)
    first = json.loads(AUTOJ.read_text().splitlines()[0])
    assert t.df["response_a"][0].to_list() == [first["response 1"]]
    assert t.labels()[0] == first["label"]


def test_shared_prompts_share_groups_across_sources(shared_all):
    """Auto-J reuses MT-Bench questions: grouping must put both in one group."""
    df = shared_all.df
    mt_groups = set(df.filter(pl.col("source") == "mt-bench-human")["group"].to_list())
    autoj_groups = set(df.filter(pl.col("source") == "autoj-pairwise")["group"].to_list())
    assert len(mt_groups & autoj_groups) >= 40


def test_trl_standard_and_conversational(tmp_path, kaggle_rows):
    std = [{"prompt": r["prompt"][0], "chosen": r["response_a"][0], "rejected": r["response_b"][0]}
           for r in kaggle_rows]
    path = tmp_path / "std.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in std))
    t = load_table(path)
    assert detect_format(path) == "trl"
    y = t.labels()
    assert 0 < y.mean() < 1 and set(y.tolist()) == {0, 1}  # chosen is put on both sides
    for row, label in zip(t.df.iter_rows(named=True), y, strict=True):
        chosen = row["response_a"] if label == 0 else row["response_b"]
        assert chosen[0] in {s["chosen"] for s in std}
    assert load_table(path).df.equals(t.df)  # deterministic
    conv = [{"chosen": _conversation(r["prompt"][:1], r["response_a"][:1]),
             "rejected": _conversation(r["prompt"][:1], r["response_b"][:1])} for r in kaggle_rows]
    pl.DataFrame(conv).write_parquet(tmp_path / "conv.parquet")
    t2 = load_table(tmp_path / "conv.parquet", "trl")
    assert t2.df["prompt"].to_list() == [r["prompt"][:1] for r in kaggle_rows]


def test_mapped_columns(tmp_path, kaggle_rows):
    rows = [{"qid": i, "question": r["prompt"][0], "left": r["response_a"][0],
             "right": r["response_b"][0], "verdict": ["L", "R", "=", "L"][i % 4]}
            for i, r in enumerate(kaggle_rows)]
    pl.DataFrame(rows).write_csv(tmp_path / "m.csv")
    cmap = ColumnMap(id="qid", prompt="question", response_a="left", response_b="right",
                     turns="text", label="verdict", label_map={"L": "A", "R": "B", "=": "TIE"})
    t = read_mapped(tmp_path / "m.csv", cmap, source="mine")
    assert t.labels().tolist()[:4] == [0, 1, 2, 0]
    assert t.sources() == ["mine"]
    with pytest.raises(DataError, match="row 1, column 'verdict'.*'L'"):
        read_mapped(tmp_path / "m.csv", ColumnMap(id="qid", prompt="question", response_a="left",
                                                  response_b="right", turns="text", label="verdict"),
                    source="mine")


def test_canonical_parquet_round_trip(tmp_path, shared_all):
    shared_all.write_parquet(tmp_path / "all.parquet")
    back = load_table(tmp_path / "all.parquet")
    assert back.df.equals(shared_all.df)


def test_fast_and_exact_kaggle_paths_agree(monkeypatch, tmp_path):
    """The one-pass polars reader and the exact row-by-row reader build the same table."""
    import prefpred.data.mapped as mapped

    df = pl.read_csv(KAGGLE, infer_schema=False)
    path = tmp_path / "k.csv"
    df.write_csv(path)
    fast = load_table(path)
    monkeypatch.setattr(mapped, "_read_json_turns_fast", lambda *a, **k: None)
    exact = load_table(path)
    assert fast.df.equals(exact.df)
    assert fast.quirks.counts == exact.quirks.counts
    assert fast.quirks.examples == exact.quirks.examples


def test_competition_toml_maps_columns(tmp_path, kaggle_rows):
    """A competition TOML can map any file's columns (format = "mapped")."""
    from prefpred.competitions import load_competition

    rows = [{"qid": f"q{i}", "question": r["prompt"][0], "left": r["response_a"][0],
             "right": r["response_b"][0], "verdict": ["left", "right", "draw"][i % 3]}
            for i, r in enumerate(kaggle_rows)]
    pl.DataFrame(rows).write_parquet(tmp_path / "mine.parquet")
    toml = tmp_path / "my-comp.toml"
    toml.write_text(f'''
name = "my-comp"
metric = "log_loss"
[[train]]
path = "{tmp_path / 'mine.parquet'}"
format = "mapped"
source = "mine"
columns = {{ id = "qid", prompt = "question", response_a = "left", response_b = "right", turns = "text", label = "verdict", label_map = {{ left = "A", right = "B", draw = "TIE" }} }}
[submission]
columns = ["id", "winner_model_a", "winner_model_b", "winner_tie"]
''')
    table = load_competition(toml).load_train()
    assert table.ids[:2] == ["q0", "q1"]
    assert table.labels().tolist()[:3] == [0, 1, 2]
    assert table.sources() == ["mine"]
