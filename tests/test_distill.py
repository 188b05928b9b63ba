"""Distillation and pseudo-labels: the student's score on a fold cannot see that fold's labels
(nested teacher targets), while plain out-of-fold teacher targets would leak them."""

from __future__ import annotations

import json
import re

import numpy as np
import polars as pl
import pytest
from test_tfidf import SMALL, synthetic

from prefpred.data.folds import assign_folds
from prefpred.data.table import PreferenceTable
from prefpred.distill import Distillation, Teacher, TeacherModel, pseudo_folds, read_teacher
from prefpred.errors import ConfigError, DataError
from prefpred.models.tfidf import TfidfModel
from prefpred.stages import run_cv

PARAMS = {**SMALL, "min_df": 1}
TFIDF = TeacherModel("tfidf", "tfidf", PARAMS)
STACKED = Teacher("stacked", (TFIDF, TeacherModel("strong", "tfidf", {**PARAMS, "C": 1.0})),
                  stacker="logistic")


@pytest.fixture(scope="module")
def data():
    table = synthetic(160, 0)
    folds = assign_folds(table, 4, 0)
    return table, folds


def noisy(table: PreferenceTable, folds: np.ndarray, k: int) -> PreferenceTable:
    """The same table with fold k's labels replaced by random ones."""
    y = table.labels().copy()
    m = folds == k
    y[m] = np.random.default_rng(7).integers(0, 3, m.sum())
    return table.with_columns(label=y)


def student_oof(table, folds, distill: Distillation) -> np.ndarray:
    distill.prepare(table, folds, cache=None)
    res = run_cv(table, lambda: TfidfModel(**PARAMS), folds=folds, progress=False,
                 train_rows=lambda k, idx: distill.fold_table(table, k, idx))
    return res.oof_logits


def unlabelled(table: PreferenceTable, n: int) -> PreferenceTable:
    """New pairs on the table's prompts (so they share its fold groups) plus a few new prompts."""
    rows = table.take(np.arange(n)).df.with_columns(
        pl.col("id") + "~new", response_b=pl.col("response_a"), response_a=pl.col("response_b"))
    extra = synthetic(10, 9).df.with_columns(pl.col("id") + "~fresh",
                                             pl.col("prompt").list.eval(pl.element() + " fresh"))
    both = pl.concat([rows.select(["id", "prompt", "response_a", "response_b"]),
                      extra.select(["id", "prompt", "response_a", "response_b"])])
    return PreferenceTable.from_frame(both, source="synthetic")


@pytest.mark.parametrize("teacher", [Teacher("plain", (TFIDF,)), STACKED],
                         ids=["model", "stacked"])
def test_planted_label_noise_in_a_fold_is_invisible_to_its_distilled_student(data, teacher):
    table, folds = data
    pool = unlabelled(table, 40)
    clean = student_oof(table, folds, Distillation(teacher, alpha=0.8, pseudo=pool))
    dirty = student_oof(noisy(table, folds, 0), folds,
                        Distillation(teacher, alpha=0.8, pseudo=pool))
    m = folds == 0
    np.testing.assert_array_equal(clean[m], dirty[m])
    assert np.abs(clean[~m] - dirty[~m]).max() > 1e-6  # the noise did reach the other folds


def test_plain_out_of_fold_teacher_targets_would_leak_the_fold(data):
    table, folds = data
    teacher = Teacher("plain", (TFIDF,))
    clean = student_oof(table, folds, Distillation(teacher, alpha=0.8, nested=False))
    dirty = student_oof(noisy(table, folds, 0), folds,
                        Distillation(teacher, alpha=0.8, nested=False))
    m = folds == 0
    assert np.abs(clean[m] - dirty[m]).max() > 1e-4


def test_pseudo_rows_join_their_prompts_fold_and_never_train_their_own_fold(data):
    table, folds = data
    pool = unlabelled(table, 40)
    where = pseudo_folds(table, folds, pool)
    np.testing.assert_array_equal(where[:40], folds[:40])  # same prompt, same fold
    distill = Distillation(Teacher("plain", (TFIDF,)), alpha=0.0, pseudo=pool,
                           pseudo_weight=0.5).prepare(table, folds, cache=None)
    for k in range(4):
        train = distill.fold_table(table, k, np.flatnonzero(folds != k))
        pseudo = train.filter(pl.col("id").str.contains("~"))
        assert len(pseudo) == int((where != k).sum())
        assert set(pseudo.groups().tolist()).isdisjoint(table.groups()[folds == k].tolist())
        np.testing.assert_allclose(pseudo.weights(), 0.5)
        soft = train.soft_labels()
        np.testing.assert_allclose(soft.sum(1), 1)
        # alpha = 0: the human rows keep their one-hot labels
        human = ~train.column("id").str.contains("~").to_numpy()
        np.testing.assert_array_equal(soft[human], np.eye(3)[train.labels()[human]])


def test_confidence_filter_keeps_only_sure_pseudo_labels(data):
    table, folds = data
    pool = unlabelled(table, 40)
    loose = Distillation(Teacher("plain", (TFIDF,)), pseudo=pool).prepare(table, folds, None)
    all_rows = loose.full_table(table)
    top = all_rows.filter(pl.col("id").str.contains("~")).soft_labels().max(1)
    cut = float(np.median(top))
    sure = Distillation(Teacher("plain", (TFIDF,)), pseudo=pool, min_confidence=cut)
    sure.logits, sure.pseudo_fold = loose.logits, loose.pseudo_fold
    kept = sure.full_table(table)
    assert len(kept) - len(table) == int((top >= cut).sum()) < len(top)
    extra = kept.filter(pl.col("id").str.contains("~"))
    assert (extra.soft_labels().max(1) >= cut).all()


def test_teacher_is_read_from_a_cv_folder_and_its_oof_file(cli, tmp_path):
    from conftest import kaggle_files

    files = kaggle_files(tmp_path, 240, 30)
    args = ["--competition", "lmsys-chatbot-arena", "--data", files["train"], "--model", "tfidf",
            "--folds", "3", "--run-dir", tmp_path / "runs", "-p", "word_max_features=500",
            "-p", "char_max_features=500", "-p", "max_iter=60"]
    assert cli("cv", *args).code == 0
    folder = tmp_path / "runs" / "lmsys-chatbot-arena" / "tfidf"
    teacher = read_teacher(folder / "oof.parquet")
    assert teacher.models[0].model == "tfidf" and teacher.models[0].params["max_iter"] == 60
    res = cli("cv", *args, "--teacher", folder, "--distill-alpha", "0.5")
    assert res.code == 0, res.err
    assert "distilled from tfidf" in res.out
    alone = json.loads((folder / "scores.json").read_text())["scores"][-1]["log_loss"]
    assert f"student alone ({folder}): log loss {alone:.4f}" in res.out
    assert re.search(r"teacher tfidf \(refitted, out of fold\): log loss \d\.\d{4}", res.out)
    assert re.search(r"student distilled: log loss \d\.\d{4}", res.out)
    student = tmp_path / "runs" / "lmsys-chatbot-arena" / "tfidf-distilled"
    record = json.loads((student / "scores.json").read_text())
    assert record["extra"]["alpha"] == 0.5 and record["extra"]["nested"] is True
    assert len(list(student.parent.glob("teacher-*/*.npz"))) == 3 + 3 * 2
    # another alpha uses the same teacher refits (their cache does not depend on it)
    assert cli("cv", *args, "--teacher", folder, "--distill-alpha", "0.3").code == 0
    assert len(list(student.parent.glob("teacher-*"))) == 1
    # an oof.parquet named as the teacher is read and checked
    import shutil

    damaged = shutil.copytree(folder, tmp_path / "damaged")
    (damaged / "oof.parquet").write_bytes(b"garbage")
    assert read_teacher(damaged).models[0].model == "tfidf"  # the folder form refits anyway
    bad = cli("cv", *args, "--teacher", damaged / "oof.parquet")
    assert bad.code == 2 and "oof.parquet" in bad.err and len(bad.err.strip().splitlines()) == 1
    # the student never writes into its teacher's folder
    student_as_teacher = cli("cv", *args, "--teacher", student)
    assert student_as_teacher.code == 2 and "would overwrite the teacher" in student_as_teacher.err
    # submit distils too, and writes a valid submission
    out = tmp_path / "sub.csv"
    res = cli("submit", "--competition", "lmsys-chatbot-arena", "--train", files["train"],
              "--test", files["test"], "--out", out, "--model", "tfidf", "--cv-folds", "0",
              "--run-dir", tmp_path / "runs", "-p", "word_max_features=500", "-p",
              "char_max_features=500", "-p", "max_iter=60", "--teacher", folder)
    assert res.code == 0, res.err
    assert len(pl.read_csv(out)) == 30


def test_bad_teacher_and_options_are_refused(cli, tmp_path):
    with pytest.raises(DataError, match="not a teacher"):
        read_teacher(tmp_path)
    (tmp_path / "scores.json").write_text("{not json")
    with pytest.raises(DataError, match="cannot read"):
        read_teacher(tmp_path)
    (tmp_path / "scores.json").write_text(json.dumps({"model": "mine", "params": {}}))
    with pytest.raises(DataError, match="not a registered model"):
        read_teacher(tmp_path)
    (tmp_path / "scores.json").write_text(json.dumps({"model": "tfidf", "params": {"C": -1}}))
    with pytest.raises(DataError, match="teacher's parameters"):
        read_teacher(tmp_path)
    with pytest.raises(ConfigError, match="alpha"):
        Distillation(Teacher("x", (TFIDF,)), alpha=1.5)
    res = cli("cv", "--competition", "lmsys-chatbot-arena", "--model", "prior",
              "--distill-alpha", "0.3")
    assert res.code != 0 and "--teacher" in res.err


RUN = """
[run]
name = "d"
competition = "COMP"
submission_competition = "lmsys-chatbot-arena"
out_dir = "OUT"
folds = 3

[data.holdout]
source = "lmsys-kaggle"
fraction = 0.2

[[models]]
name = "tfidf"
label = "alone"
params = { word_max_features = 400, char_max_features = 400, max_iter = 50 }

[[models]]
name = "tfidf"
label = "student"
params = { word_max_features = 400, char_max_features = 400, max_iter = 50 }

[stack]
method = "blend"

[calibration]
method = "temperature"
"""


def competition_file(tmp_path, sources) -> str:
    """A competition TOML over (path, format, source) training sources, Kaggle's layout."""
    train = "".join(f'\n[[train]]\npath = "{p}"\nformat = "{f}"\nsource = "{s}"\n'
                    for p, f, s in sources)
    path = tmp_path / "comp.toml"
    path.write_text(f"""name = "small"
description = "a test competition"
metric = "log_loss"
classes = ["A", "B", "TIE"]
{train}
[test]
format = "kaggle-lmsys"

[submission]
layout = "probabilities"
columns = ["id", "winner_model_a", "winner_model_b", "winner_tie"]
""")
    return path


def test_run_distils_the_students_and_reports_them_beside_the_teacher(cli, tmp_path):
    from conftest import kaggle_files

    from prefpred.run import run

    files = kaggle_files(tmp_path, 400, 10)
    teacher_args = ["--competition", "lmsys-chatbot-arena", "--data", files["train"],
                    "--model", "tfidf", "--folds", "3", "--run-dir", tmp_path / "runs",
                    "-p", "word_max_features=400", "-p", "char_max_features=400",
                    "-p", "max_iter=50"]
    assert cli("cv", *teacher_args).code == 0
    teacher = tmp_path / "runs" / "lmsys-chatbot-arena" / "tfidf"
    comp = competition_file(tmp_path, [(files["train"], "kaggle-lmsys", "lmsys-kaggle")])
    config = tmp_path / "run.toml"
    config.write_text(RUN.replace("COMP", str(comp)).replace("OUT", str(tmp_path / "out"))
                      + f'\n[distill]\nteacher = "{teacher}"\nalpha = 0.7\nstudents = ["student"]\n')
    messages = []
    res = run(config, progress=False, say=messages.append)
    assert any("distilled from tfidf" in m for m in messages)
    html = res.report.read_text()
    assert "Distillation (out of fold, human labels only)" in html
    assert "student, distilled" in html and "student alone (not distilled)" in html
    # the two students differ only by distillation: their out-of-fold logits differ
    out = tmp_path / "out" / "cv"
    a = pl.read_parquet(out / "alone" / "oof.parquet")
    b = pl.read_parquet(out / "student" / "oof.parquet")
    assert a["id"].to_list() == b["id"].to_list()
    assert np.abs(a["logit_A"].to_numpy() - b["logit_A"].to_numpy()).max() > 1e-4
    # the run folder is itself a teacher: its base models and its stacker, refitted
    stacked = read_teacher(tmp_path / "out")
    assert [m.label for m in stacked.models] == ["alone", "student"]
    assert [m.model for m in stacked.models] == ["tfidf", "tfidf"] and stacked.stacker == "blend"
    bad = tmp_path / "bad.toml"
    bad.write_text(config.read_text().replace('students = ["student"]', 'students = ["studnet"]'))
    res = cli("run", bad)
    assert res.code != 0 and "studnet" in res.err


def test_run_trains_on_two_class_rows_and_stacks_three_class_ones(tmp_path):
    from conftest import DATA, kaggle_files

    from prefpred.run import run

    files = kaggle_files(tmp_path, 400, 10)
    comp = competition_file(tmp_path, [(files["train"], "kaggle-lmsys", "lmsys-kaggle"),
                                       (DATA / "llmbar", "llmbar", "llmbar")])
    config = tmp_path / "run.toml"
    config.write_text(RUN.replace("COMP", str(comp)).replace("OUT", str(tmp_path / "out")))
    messages = []
    res = run(config, progress=False, say=messages.append)
    said = next(m for m in messages if m.startswith("stacking and calibration on the"))
    three, two = map(int, re.findall(r"(\d+) t\w+-class rows", said))
    assert 400 < two <= 419 and three > 250  # LLMBar rows sharing a held-out prompt leave too
    sub = pl.read_csv(res.submission)
    np.testing.assert_allclose(sub.select(pl.exclude("id")).sum_horizontal().to_numpy(), 1,
                               atol=1e-6)
    scores = json.loads((tmp_path / "out" / "cv" / "alone" / "scores.json").read_text())
    llmbar = next(s for s in scores["scores"] if s["group"] == "llmbar")
    assert llmbar["log_loss"] < 0.75  # scored on P(A) / (P(A) + P(B)): ln 2 is the coin


def test_a_damaged_teacher_cache_is_refitted_not_trusted(data, tmp_path):
    table, folds = data
    teacher = Teacher("plain", (TFIDF,))
    first = Distillation(teacher, nested=False).prepare(table, folds, tmp_path)
    files = sorted(tmp_path.glob("*.npz"))
    assert len(files) == 4
    with np.load(files[0]) as z:
        saved = dict(z)
    saved["rows"] = saved["rows"][:3]  # wrong shape
    with open(files[0], "wb") as fh:
        np.savez(fh, **saved)
    files[1].write_bytes(b"not an npz")
    again = Distillation(teacher, nested=False).prepare(table, folds, tmp_path)
    np.testing.assert_array_equal(first.logits.outer, again.logits.outer)


def test_pseudo_rows_keep_nothing_built_from_their_hidden_labels():
    from prefpred.competitions import data_root
    from prefpred.distill import pseudo_table

    # PandaLM rows carry three annotators' votes and a vote-agreement weight
    table = pseudo_table(data_root() / "pandalm" / "testset-v1.json")
    assert not table.is_labelled
    assert table.df["soft_label"].null_count() == table.df["votes"].null_count() == len(table)
    assert (table.weights() == 1.0).all()
