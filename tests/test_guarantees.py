"""What prefpred guarantees on bad input, by class (README: "What prefpred guarantees on bad
input"): one error line naming file, row or key, a non-zero exit, nothing half-written, no
output over an input or outside the chosen folder, no code from a file, resumed work checked."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import KAGGLE, PROJECT_ROOT, kaggle_files

COMP = "lmsys-chatbot-arena"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one_line(res, *fragments: str) -> str:
    assert res.code == 2, (res.code, res.out, res.err)
    lines = res.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prefpred: error: "), res.err
    assert "Traceback" not in res.err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A small labelled Kaggle train file, a test file, a scores file and a fitted tie model."""
    base = kaggle_files(tmp_path_factory.mktemp("guarantees"), 120, 20)["base"]
    rng = np.random.default_rng(0)
    n = 300
    margin = rng.normal(size=n)
    y = np.where(margin + rng.normal(size=n) > 0.6, "A",
                 np.where(margin + rng.normal(size=n) < -0.6, "B", "tie"))
    pl.DataFrame({"id": [f"p{i}" for i in range(n)], "reward_a": margin,
                  "reward_b": np.zeros(n), "label": y}).write_csv(base / "scores.csv")
    return base


# ------------------------------------------------------------------------- outputs vs inputs
OVERWRITE_CASES = [
    ("submit --out the training file", lambda d: [
        "submit", "--competition", COMP, "--train", d / "train.csv", "--test", d / "test.csv",
        "--out", d / "train.csv", "--cv-folds", "0"], "train.csv"),
    ("submit --out the test file", lambda d: [
        "submit", "--competition", COMP, "--train", d / "train.csv", "--test", d / "test.csv",
        "--out", d / "test.csv", "--cv-folds", "0"], "test.csv"),
    ("submit --out the test file by another name", lambda d: [
        "submit", "--competition", COMP, "--train", d / "train.csv", "--test",
        d / "sub" / ".." / "test.csv", "--out", d / "test.csv", "--cv-folds", "0"], "test.csv"),
    ("calibrate-rewards apply --out its scores", lambda d: [
        "calibrate-rewards", "apply", "--model", d / "model", "--scores", d / "scores.csv",
        "--out", d / "scores.csv"], "scores.csv"),
    ("score-rewards --out its data", lambda d: [
        "score-rewards", "--model", d, "--data", d / "test.csv", "--out", d / "test.csv"],
     "test.csv"),
    ("holdout --out over its data", lambda d: [
        "holdout", "--competition", COMP, "--data", d / "test_labelled.csv", "--out", d],
     "test_labelled.csv"),
    ("calibrate-rewards fit --out a file", lambda d: [
        "calibrate-rewards", "fit", "--scores", d / "scores.csv", "--out", d / "scores.csv"],
     "scores.csv"),
]


@pytest.mark.parametrize("name,args,victim", OVERWRITE_CASES, ids=[c[0] for c in OVERWRITE_CASES])
def test_an_output_never_replaces_an_input(cli, data, tmp_path, name, args, victim):
    import shutil

    work = tmp_path / "w"
    shutil.copytree(data, work)
    (work / "sub").mkdir()
    (work / "test_labelled.csv").write_bytes((work / "train.csv").read_bytes())
    assert cli("calibrate-rewards", "fit", "--scores", work / "scores.csv", "--out",
               work / "model").code == 0
    before = {p: _sha(p) for p in work.iterdir() if p.is_file()}
    res = cli(*args(work))
    _one_line(res)
    assert {p: _sha(p) for p in work.iterdir() if p.is_file()} == before  # nothing touched


@pytest.mark.parametrize("make_out,text", [
    (lambda d: d, "is a folder"),
    (lambda d: d / "test.csv" / "sub.csv", "is a file, not a folder"),
    (lambda d: d / "sub.txt", "must end in"),
])
def test_bad_output_paths_are_refused_before_any_work(cli, data, make_out, text):
    res = cli("calibrate-rewards", "apply", "--model", data / "nothing-fitted",
              "--scores", data / "scores.csv", "--out", make_out(data))
    _one_line(res, text)


def test_unwritable_output_folder_is_refused_before_fitting(cli, data, tmp_path, monkeypatch):
    """A folder the process may not write (os.access says no: the tests may run as root, who
    writes anywhere) or may not even look into (stat is denied) is refused before any work."""
    import prefpred.io

    locked = tmp_path / "locked"
    locked.mkdir()
    real_access, real_stat = os.access, os.stat

    def access(path, mode, *a, **k):
        return False if Path(path) == locked and mode & os.W_OK else real_access(path, mode)

    def stat(path, *a, **k):
        if Path(path).parent == locked / "hidden":
            raise PermissionError(13, "Permission denied", str(path))
        return real_stat(path, *a, **k)

    monkeypatch.setattr(prefpred.io.os, "access", access)
    fitted = []
    monkeypatch.setattr("prefpred.stages.fit_predict", lambda *a, **k: fitted.append(1))
    for out, folder in ((locked / "sub.csv", locked), (locked / "new" / "sub.csv", locked)):
        res = cli("submit", "--competition", COMP, "--train", data / "train.csv", "--test",
                  data / "test.csv", "--out", out, "--cv-folds", "0")
        _one_line(res, f"the folder {folder} cannot be written")
    monkeypatch.setattr(prefpred.io.os, "stat", stat)
    res = cli("submit", "--competition", COMP, "--train", data / "train.csv", "--test",
              data / "test.csv", "--out", locked / "hidden" / "x" / "sub.csv", "--cv-folds", "0")
    _one_line(res, "cannot be written")
    assert fitted == [] and list(locked.iterdir()) == []


# ------------------------------------------------------------------------- names become paths
@pytest.mark.parametrize("args,text", [
    (["tune", "--study", "../escape", "--trials", "0"], "cannot name a file"),
    (["tune", "--save-as", "a/b", "--trials", "0"], "cannot name a file"),
    (["cv", "--competition", "../competitions/shared-all"], "unknown competition"),
    (["cv", "--competition", "shared-all", "--params", "../../no/such/params"],
     "no parameter file"),
    (["calibrate-rewards", "apply", "--model", ".", "--use", "../x", "--scores", "s.csv",
      "--out", "o.csv"], "is not a tie model"),
])
def test_names_that_become_paths_are_checked(cli, tmp_path, args, text):
    res = cli(*args)
    _one_line(res, text)


@pytest.mark.parametrize("edit,text", [
    (lambda s: s.replace('label = "prior-raw"', 'label = "../../outside"'), "cannot name"),
    (lambda s: s.replace('name = "t"', 'name = "x/y"'), "cannot name"),
])
def test_run_names_are_safe_path_parts(cli, tmp_path, edit, text):
    path = tmp_path / "run.toml"
    path.write_text(edit(RUN))
    _one_line(cli("run", path), text)
    assert not (tmp_path / "out").exists() and not (tmp_path.parent / "outside").exists()


def test_a_competition_file_cannot_name_a_path(cli, tmp_path):
    comp = tmp_path / "evil.toml"
    comp.write_text('name = "../../evil"\n[submission]\ncolumns = ["id", "a", "b", "c"]\n'
                    '[[train]]\npath = "x.csv"\nformat = "kaggle-lmsys"\n')
    _one_line(cli("cv", "--competition", comp, "--run-dir", tmp_path), "cannot name")


# ------------------------------------------------------------------------- security
def _hostile_folder(path: Path, marker: Path) -> Path:
    """A tiny model folder whose config maps to Python code that would leave a marker."""
    from prefpred.testing import tiny_backbone

    tiny_backbone("llama", path)
    (path / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n"
                                  "from transformers import LlamaConfig as EvilConfig\n")
    for name in ("config.json", "tokenizer_config.json"):
        cfg = json.loads((path / name).read_text())
        cfg["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel",
                           "AutoTokenizer": ["evil.EvilTokenizer", None]}
        (path / name).write_text(json.dumps(cfg))
    return path


def test_a_hostile_model_folder_runs_no_code(cli, tmp_path, data):
    marker = tmp_path / "code-ran"
    folder = _hostile_folder(tmp_path / "hostile", marker)
    res = cli("cv", "--competition", COMP, "--data", data / "train.csv", "--model", "backbone",
              "--backbone", folder, "--folds", "2", "--run-dir", tmp_path / "runs",
              "--param", "max_steps=1")
    _one_line(res, "ships Python code", "--trust-remote-code")
    res = cli("score-rewards", "--model", folder, "--data", data / "test.csv",
              "--out", tmp_path / "s.csv")
    _one_line(res, "ships Python code")
    assert not marker.exists()


@pytest.mark.parametrize("params,text", [
    ({"extra": {"trust_remote_code": True}}, "trust_remote_code' cannot be set"),
    ({"extra": {"revision": "main"}}, "cannot be set"),
    ({"trust_remote_code": True}, "unknown backbone parameter"),
    ({"cache_dir": "/etc", "surprise": 1}, "unknown backbone parameter 'surprise'"),
])
def test_a_hostile_artifact_is_refused(cli, tmp_path, data, params, text):
    from prefpred.labels import CLASSES

    artifact = tmp_path / "artifact"
    artifact.mkdir()
    info = {"format": 1, "classes": list(CLASSES), "params": {"finetune": "frozen", **params},
            "backbone": {"name": None, "path": str(tmp_path), "gguf_file": None}}
    (artifact / "prefpred_config.json").write_text(json.dumps(info))
    res = cli("predict", artifact, "--test", data / "test.csv", "--out", tmp_path / "p.parquet")
    _one_line(res, text)
    assert not (tmp_path / "p.parquet").exists()


def test_a_model_folder_missing_a_part_is_named(cli, tmp_path, data):
    from prefpred.testing import tiny_backbone

    folder = tiny_backbone("llama", tmp_path / "m")
    for f in folder.glob("*.safetensors"):
        f.unlink()
    res = cli("cv", "--competition", COMP, "--data", data / "train.csv", "--model", "backbone",
              "--backbone", folder, "--folds", "2", "--run-dir", tmp_path / "runs")
    _one_line(res, "has no weights")


def test_the_process_is_offline_by_construction():
    import prefpred  # noqa: F401

    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"


# ------------------------------------------------------------------------- written together
def test_submission_and_provenance_appear_together(tmp_path, monkeypatch):
    import prefpred.submission as submission
    from prefpred.competitions import load_competition
    from prefpred.data.formats import load_table
    from prefpred.errors import PrefpredError

    comp = load_competition(COMP)
    test = load_table(KAGGLE).take(np.arange(10))
    out = tmp_path / "sub.csv"

    def broken_validate(*a, **k):
        raise submission.SubmissionError("simulated grader rejection")

    monkeypatch.setattr(submission, "validate_submission", broken_validate)
    with pytest.raises(PrefpredError):
        submission.write_submission(out, test, np.full((10, 3), 1 / 3), comp, {"x": 1})
    assert list(tmp_path.iterdir()) == []  # no submission, no orphan provenance, no temporary
    monkeypatch.undo()
    submission.write_submission(out, test, np.full((10, 3), 1 / 3), comp, {"x": 1})
    assert out.exists() and submission.provenance_path(out).exists()


RUN = """
[run]
name = "t"
competition = "lmsys-chatbot-arena"
out_dir = "OUT"
folds = 3
[data.holdout]
fraction = 0.2
[[models]]
name = "prior"
[[models]]
name = "prior"
label = "prior-raw"
params = { symmetric = false }
[stack]
method = "none"
[calibration]
method = "temperature"
"""


def test_a_run_whose_report_fails_records_nothing(tmp_path, monkeypatch):
    import prefpred.report
    from prefpred.run import run

    cfg = tmp_path / "run.toml"
    cfg.write_text(RUN.replace("OUT", str(tmp_path / "out")))

    def broken(**kwargs):
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(prefpred.report, "render_report", broken)
    with pytest.raises(RuntimeError):
        run(cfg, progress=False, say=lambda s: None)
    out = tmp_path / "out"
    for name in ("submission.csv", "submission.csv.provenance.json", "report.html", "run.json"):
        assert not (out / name).exists(), name
    monkeypatch.undo()
    res = run(cfg, progress=False, say=lambda s: None)
    assert all((out / n).exists() for n in ("submission.csv", "report.html", "run.json"))
    assert json.loads((out / "run.json").read_text())["submission"] == str(res.submission)


def test_run_outputs_may_not_replace_inputs(cli, tmp_path, data):
    body = RUN.replace("[data.holdout]\nfraction = 0.2", f'[data]\ntest = "{data / "test.csv"}"')
    body += f'[output]\nsubmission = "{data / "test.csv"}"\n'
    cfg = tmp_path / "run.toml"
    cfg.write_text(body.replace("OUT", str(tmp_path / "out")))
    before = _sha(data / "test.csv")
    _one_line(cli("run", cfg), "never replaces an input")
    assert _sha(data / "test.csv") == before and not (tmp_path / "out").exists()


# ------------------------------------------------------------------------- probabilities
def test_the_probability_writer_never_writes_nan_or_exact_zero_or_one(tmp_path):
    from prefpred.errors import PrefpredError
    from prefpred.probabilities import PROBABILITY_FLOOR
    from prefpred.submission import write_probabilities

    out = tmp_path / "p.csv"
    with pytest.raises(PrefpredError, match="row 2"):
        write_probabilities(out, ["a", "b"], np.array([[0.2, 0.3, 0.5], [np.nan, 0.5, 0.5]]))
    assert not out.exists()
    write_probabilities(out, ["a", "b"], np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 7.0]]))
    p = pl.read_csv(out).drop("id").to_numpy()
    assert ((p > 0) & (p < 1)).all() and np.allclose(p.sum(1), 1, atol=1e-12)
    assert p.min() == pytest.approx(PROBABILITY_FLOOR, rel=1e-5)


def test_a_model_returning_nan_is_one_line(cli, tmp_path, data, monkeypatch):
    from prefpred.models.prior import ClassPrior

    monkeypatch.setattr(ClassPrior, "predict_logits",
                        lambda self, table: np.full((len(table), 3), np.nan))
    res = cli("submit", "--competition", COMP, "--train", data / "train.csv", "--test",
              data / "test.csv", "--out", tmp_path / "sub.csv", "--cv-folds", "0")
    _one_line(res, "non-finite logits")
    assert not (tmp_path / "sub.csv").exists()


# ------------------------------------------------------------------------- degenerate labels
def _scores(tmp_path, labels, margin=None):
    n = len(labels)
    margin = np.random.default_rng(1).normal(size=n) if margin is None else margin
    path = tmp_path / "scores.csv"
    pl.DataFrame({"id": [str(i) for i in range(n)], "reward_a": margin,
                  "reward_b": np.zeros(n), "label": labels}).write_csv(path)
    return path


def test_tie_models_refuse_a_single_class_and_need_a_choice_without_ties(cli, tmp_path):
    one = _scores(tmp_path, ["A"] * 60)
    _one_line(cli("calibrate-rewards", "fit", "--scores", one, "--out", tmp_path / "m"),
              "every label is A")
    no_ties = _scores(tmp_path, ["A", "B"] * 60)
    _one_line(cli("calibrate-rewards", "fit", "--scores", no_ties, "--out", tmp_path / "m"),
              "no ties", "--tie-rate")
    assert not (tmp_path / "m").exists()
    res = cli("calibrate-rewards", "fit", "--scores", no_ties, "--out", tmp_path / "m",
              "--tie-rate", "0.2")
    assert res.code == 0, res.err
    model = json.loads((tmp_path / "m" / "calibrator.json").read_text())
    assert model["name"] in ("rao-kupper", "davidson")
    _one_line(cli("calibrate-rewards", "fit", "--scores", no_ties, "--out", tmp_path / "m2",
                  "--tie-rate", "1.5"), "tie_rate")


def test_separable_scores_are_regularised_and_said_so(cli, tmp_path):
    margin = np.linspace(-3, 3, 300)
    labels = np.where(margin > 1, "A", np.where(margin < -1, "B", "tie"))
    path = _scores(tmp_path, labels.tolist(), margin)
    res = cli("calibrate-rewards", "fit", "--scores", path, "--out", tmp_path / "m")
    assert res.code == 0, res.err
    assert "separate the labels" in res.err and "Warning" not in res.err
    for name in ("rao-kupper", "davidson", "multinomial"):
        coef = json.loads((tmp_path / "m" / f"{name}.json").read_text())["state"]["coef_"]
        assert np.isfinite(coef).all() and np.abs(coef).max() < 100, (name, coef)


def test_calibration_refuses_a_single_class():
    from prefpred.calibration import make_calibrator
    from prefpred.errors import DataError

    for method in ("temperature", "vector"):
        with pytest.raises(DataError, match="every label is B"):
            make_calibrator(method).fit(np.zeros((20, 3)), np.ones(20, dtype=int))


def test_training_on_one_class_is_refused(cli, tmp_path, data):
    raw = pl.read_csv(data / "train.csv", infer_schema=False).with_columns(
        winner_model_a=pl.lit("1"), winner_model_b=pl.lit("0"), winner_tie=pl.lit("0"))
    raw.write_csv(tmp_path / "a.csv")
    _one_line(cli("cv", "--competition", COMP, "--data", tmp_path / "a.csv", "--run-dir",
                  tmp_path), "every label is A")


# ------------------------------------------------------------------------- saved estimators
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """One valid saved file of each kind: calibrator, stacker, tie model."""
    from prefpred.calibration import make_calibrator
    from prefpred.rewards.models import make_tie_model
    from prefpred.stack import make_stacker

    base = tmp_path_factory.mktemp("saved")
    rng = np.random.default_rng(0)
    z = rng.normal(size=(300, 3))
    y = z.argmax(1)
    make_calibrator("vector").fit(z, y).save(base / "calibrator.json")
    make_stacker("logistic", Cs=[1.0]).fit({"m": z}, y).save(base / "stacker.json")
    make_tie_model("rao-kupper").fit(z[:, 0] - z[:, 1], y).save(base / "tie.json")
    return base


EDITS = [
    ("missing key", lambda d: d.pop("state"), "missing keys"),
    ("unknown key", lambda d: d.update(code="import os"), "unknown keys"),
    ("unknown name", lambda d: d.update(name="evil"), "unknown"),
    ("wrong version", lambda d: d.update(format_version=1), "format version"),
    ("unknown parameter", lambda d: d["params"].update(evil=1), "parameters"),
    ("a state value is NaN", lambda d: d["state"].update(
        {k: (np.nan if not isinstance(v, list) else [np.nan] * len(v))
         for k, v in list(d["state"].items())[-1:]}), "finite"),
    ("a state key missing", lambda d: d["state"].pop(list(d["state"])[-1]), "state keys"),
    ("a state of the wrong shape", lambda d: d["state"].update(
        {k: [1.0] for k in list(d["state"])[-1:]}), None),
]


@pytest.mark.parametrize("kind", ["calibrator", "stacker", "tie"])
@pytest.mark.parametrize("edit_name,edit,text", EDITS, ids=[e[0] for e in EDITS])
def test_loading_a_tampered_estimator_is_refused(saved, tmp_path, kind, edit_name, edit, text):
    from prefpred.calibration import load_calibrator
    from prefpred.errors import DataError
    from prefpred.rewards.models import load_tie_model
    from prefpred.stack import load_stacker

    loader = {"calibrator": load_calibrator, "stacker": load_stacker, "tie": load_tie_model}[kind]
    data = json.loads((saved / f"{kind}.json").read_text())
    loader(saved / f"{kind}.json")  # the untouched file loads
    edit(data)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(DataError, match=text) as err:
        loader(bad)
    assert str(bad) in str(err.value) and "\n" not in str(err.value)


def test_a_tie_parameter_outside_its_domain_is_refused(saved, tmp_path):
    from prefpred.errors import DataError
    from prefpred.rewards.models import load_tie_model

    data = json.loads((saved / "tie.json").read_text())
    data["state"]["coef_"][2] = -0.5  # Rao-Kupper's eta must be positive
    (tmp_path / "t.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match="eta = -0.5 is outside"):
        load_tie_model(tmp_path / "t.json")


# ------------------------------------------------------------------------- configuration files
@pytest.mark.parametrize("edit,text", [
    (lambda s: s.replace("folds = 3", "foldz = 3"), "unknown key 'foldz' (did you mean 'folds'?)"),
    (lambda s: s.replace("[stack]", "[stak]"), "did you mean 'stack'"),
    (lambda s: s.replace('name = "prior"\n[[models]]', 'nmae = "prior"\n[[models]]'),
     "[[models]] #1 unknown key 'nmae' (did you mean 'name'?)"),
    (lambda s: s.replace("folds = 3", 'folds = "three"'), "folds = 'three'"),
    (lambda s: s.replace("folds = 3", "folds = 1"), "greater than or equal to 2"),
    (lambda s: s.replace("fraction = 0.2", "fraction = 1.2"), "less than 1"),
    (lambda s: s.replace("symmetric = false", "symetric = false"),
     "unknown key 'symetric' (did you mean 'symmetric'?)"),
    (lambda s: s.replace("symmetric = false", "smoothing = -1"), "smoothing"),
    (lambda s: s.replace('method = "none"', 'method = ["none"]'), "[stack] method"),
    (lambda s: s + "\n[run.extra]\nx = 1\n", "unknown key 'extra'"),
    (lambda s: s.replace("[run]", "[run"), "invalid TOML"),
])
def test_run_config_errors_name_file_section_and_key(cli, tmp_path, edit, text):
    cfg = tmp_path / "run.toml"
    cfg.write_text(edit(RUN).replace("OUT", str(tmp_path / "out")))
    line = _one_line(cli("run", cfg), text)
    assert str(cfg) in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("body,text", [
    ('name = "c"\nmetrc = "log_loss"\n[submission]\ncolumns = ["id", "a", "b", "c"]\n',
     "did you mean 'metric'"),
    ('name = "c"\n[submission]\ncolumns = ["id", "a", "b"]\n', "needs id + 3 columns"),
    ('name = "c"\n[submission]\ncolumns = ["id", "a", "a", "b"]\n', "repeat a name"),
    ('name = "c"\n[cv]\nfolds = 1\n[submission]\ncolumns = ["id", "a", "b", "c"]\n',
     "greater than or equal to 2"),
    ('name = "c"\n[[train]]\npath = "x"\nformat = "kagle-lmsys"\n[submission]\n'
     'columns = ["id", "a", "b", "c"]\n', "did you mean 'kaggle-lmsys'"),
    ('name = "c"\n[[train]]\npath = "x"\nformat = "kaggle-lmsys"\ncolumns = { promt = "q" }\n'
     '[submission]\ncolumns = ["id", "a", "b", "c"]\n', "did you mean 'prompt'"),
    ('name = "c"\n[[train]]\npath = "x"\nformat = "mt-bench"\ncolumns = { prompt = "q" }\n'
     '[submission]\ncolumns = ["id", "a", "b", "c"]\n', "takes no columns"),
    ('name = "c"\nclasses = ["A", "C"]\n[submission]\ncolumns = ["id", "a", "b"]\n',
     "must be distinct"),
])
def test_competition_file_errors(cli, tmp_path, body, text):
    comp = tmp_path / "c.toml"
    comp.write_text(body)
    _one_line(cli("cv", "--competition", comp, "--run-dir", tmp_path), text, str(comp))


@pytest.mark.parametrize("content,suffix,text", [
    ("[1, 2, 3]", ".json", "expected a table"),
    ('{"params": [1, 2]}', ".json", "'params' must be a table"),
    ("{not json", ".json", "cannot parse"),
    ("num_leaves = 'many'", ".toml", "num_leaves = 'many'"),
    ("num_leavs = 7", ".toml", "did you mean 'num_leaves'"),
    ("learning_rate = -0.1", ".toml", "learning_rate"),
])
def test_params_file_errors(cli, tmp_path, content, suffix, text):
    path = tmp_path / f"p{suffix}"
    path.write_text(content)
    _one_line(cli("cv", "--competition", COMP, "--data", KAGGLE, "--model", "lgbm",
                  "--params", path, "--run-dir", tmp_path), text)


@pytest.mark.parametrize("content,text", [
    ("max_lenght = 64", "did you mean 'max_length'"),
    ("[params]\nmax_length = 'long'", "max_length = 'long'"),
    ("[params]\nlr = -1", "learning rates must be positive"),
    ("params = 3", "must be a table"),
    ("[params\n", "invalid TOML"),
])
def test_backbone_config_errors(cli, tmp_path, content, text):
    path = tmp_path / "bb.toml"
    path.write_text(content)
    _one_line(cli("cv", "--competition", COMP, "--config", path, "--run-dir", tmp_path), text)


@pytest.mark.parametrize("args,text", [
    (["cv", "--competition", COMP, "--only-fold", "7"], "--only-fold 7"),
    (["cv", "--competition", COMP, "--folds", "1"], "--folds"),
    (["cv", "--competition", COMP, "--foldz", "3"], "Possible options: --folds"),
    (["cv", "--competition", COMP, "--seed", "-1"], "--seed"),
    (["holdout", "--competition", COMP, "--out", "x", "--fraction", "1.5"], "fraction"),
    (["cv", "--competition", COMP, "--model", "lgbm", "--param", "num_leaves"], "key=value"),
    (["submit", "--competition", COMP, "--train", "t.csv", "--test", "t.csv", "--out", "o.csv",
      "--cv-folds", "-2"], "--cv-folds"),
])
def test_cli_options_are_checked(cli, tmp_path, args, text):
    os.chdir(tmp_path)
    try:
        _one_line(cli(*args), text)
    finally:
        os.chdir(PROJECT_ROOT)


# ------------------------------------------------------------------------- readers
@pytest.mark.parametrize("name,content,column", [
    ("dup.csv", "id,prompt,prompt,response_a,response_b\n1,a,b,c,d\n", "prompt"),
    ("dup.jsonl", '{"prompt": "a", "response_a": "b", "response_a": "c", "response_b": "d"}\n',
     "response_a"),
    ("dup.json", '[{"instruction": "a", "instruction": "b"}]', "instruction"),
])
def test_a_repeated_column_name_is_refused(cli, tmp_path, name, content, column):
    path = tmp_path / name
    path.write_text(content)
    _one_line(cli("data", "inspect", path, "--format", "mapped"), name, f"column '{column}'",
              "repeats")


def test_turn_count_mismatch_is_reported_and_kept(cli, tmp_path):
    raw = pl.read_csv(KAGGLE, infer_schema=False).head(20)
    raw = raw.with_columns(pl.when(pl.int_range(pl.len()) == 3)
                           .then(pl.lit('["one turn", "two turns"]')).otherwise(pl.col("prompt"))
                           .alias("prompt"))
    raw.write_csv(tmp_path / "t.csv")
    res = cli("data", "inspect", tmp_path / "t.csv")
    assert res.code == 0 and "turn counts differ between prompt and responses" in res.out
    assert "(first: row 4)" in res.out


def test_a_missing_column_lists_the_files_own_columns(cli, tmp_path):
    pl.read_csv(KAGGLE, infer_schema=False).head(5).drop("response_b").write_csv(
        tmp_path / "m.csv")
    line = _one_line(cli("data", "inspect", tmp_path / "m.csv", "--format", "kaggle-lmsys"),
                     "missing column(s) ['response_b']", "'prompt'")
    assert "__" not in line


def test_json_errors_read_starting_at_char(cli, tmp_path):
    (tmp_path / "b.jsonl").write_text('{"prompt": "unterminated}\n')
    line = _one_line(cli("data", "inspect", tmp_path / "b.jsonl", "--format", "mapped"))
    assert "starting at char" in line and "at at" not in line


# ------------------------------------------------------------------------- the validator
@pytest.fixture
def submission_files(tmp_path):
    from prefpred.competitions import load_competition
    from prefpred.data.formats import load_table
    from prefpred.submission import submission_frame

    test = load_table(KAGGLE).take(np.arange(8))
    raw = pl.read_csv(KAGGLE, infer_schema=False).head(8).select(
        "id", "prompt", "response_a", "response_b")
    raw.write_csv(tmp_path / "test.csv")
    p = np.random.default_rng(0).dirichlet([1, 1, 1], size=8)
    submission_frame(test.ids, p, load_competition(COMP)).write_csv(tmp_path / "sub.csv")
    return tmp_path / "sub.csv", tmp_path / "test.csv"


def _graders_accept(sub: Path, test: Path) -> bool:
    """mle-bench's LMSYS rules (pandas, match by id after sorting) as an independent check."""
    import pandas as pd

    s, t = pd.read_csv(sub), pd.read_csv(test)
    cols = ["winner_model_a", "winner_model_b", "winner_tie"]
    if set(s.columns) != {"id", *cols} or len(s) != len(t):
        return False
    if not ((s[cols] >= 0) & (s[cols] <= 1)).all().all():
        return False
    if not s[cols].sum(axis=1).round(6).eq(1).all():
        return False
    return bool((s.sort_values("id")["id"].values == t.sort_values("id")["id"].values).all())


@pytest.mark.parametrize("name,edit", [
    ("rows in another order", lambda t: "\n".join([t.splitlines()[0],
                                                    *reversed(t.splitlines()[1:])]) + "\n"),
    ("spaces around ids and numbers", lambda t: "\n".join(
        [t.splitlines()[0], *(f" {r} ".replace(",", " , ") for r in t.splitlines()[1:])]) + "\n"),
    ("trailing blank lines", lambda t: t + "\n\n\n"),
    ("columns in another order", lambda t: "\n".join(
        ",".join([r.split(",")[0], r.split(",")[2], r.split(",")[1], r.split(",")[3]])
        for r in t.splitlines()) + "\n"),
    ("windows line endings", lambda t: t.replace("\n", "\r\n")),
])
def test_the_validator_accepts_what_the_graders_accept(cli, submission_files, name, edit):
    sub, test = submission_files
    sub.write_text(edit(sub.read_text()), newline="")
    assert _graders_accept(sub, test)
    res = cli("validate-submission", sub, "--competition", COMP, "--test", test)
    assert res.code == 0, res.err


@pytest.mark.parametrize("name,edit", [
    ("a row twice", lambda t: t + t.splitlines()[1] + "\n"),
    ("a value above 1", lambda t: t.replace(t.splitlines()[1].split(",")[1], "1.5", 1)),
    ("rows not summing to one", lambda t: t.replace(t.splitlines()[2].split(",")[3], "0.9", 1)),
])
def test_the_validator_rejects_what_the_graders_reject(cli, submission_files, name, edit):
    sub, test = submission_files
    sub.write_text(edit(sub.read_text()))
    assert not _graders_accept(sub, test)
    assert cli("validate-submission", sub, "--competition", COMP, "--test", test).code == 2


def test_score_matches_rows_by_id(cli, tmp_path):
    from sklearn.metrics import log_loss

    raw = pl.read_csv(KAGGLE, infer_schema=False).head(30)
    raw.write_csv(tmp_path / "labels.csv")
    p = np.random.default_rng(3).dirichlet([2, 2, 2], size=30)
    sub = pl.DataFrame({"id": raw["id"], "winner_model_a": p[:, 0], "winner_model_b": p[:, 1],
                        "winner_tie": p[:, 2]})
    sub.reverse().write_csv(tmp_path / "sub.csv")  # rows in reverse order
    y = raw.select(pl.col("winner_model_b").cast(pl.Int64)
                   + 2 * pl.col("winner_tie").cast(pl.Int64)).to_series().to_numpy()
    res = cli("score", tmp_path / "sub.csv", "--competition", COMP, "--labels",
              tmp_path / "labels.csv")
    assert res.code == 0, res.err
    assert f"{log_loss(y, p, labels=[0, 1, 2]):.4f}" in res.out


# ------------------------------------------------------------------------- resumed work
def test_a_truncated_fold_file_is_recomputed(cli, tmp_path):
    args = ["cv", "--competition", COMP, "--data", KAGGLE, "--model", "prior", "--run-dir",
            tmp_path]
    assert cli(*args).code == 0
    out = tmp_path / COMP / "prior"
    first = pl.read_parquet(out / "oof.parquet")
    fold = out / "fold_2.parquet"
    fold.write_bytes(fold.read_bytes()[:100])  # truncated
    (out / "cv_key.json").write_text("{not json")  # and a broken key
    res = cli(*args)
    assert res.code == 0, res.err
    assert "recomputing" in res.err and "Traceback" not in res.err
    assert pl.read_parquet(out / "oof.parquet").equals(first)


def test_a_corrupt_cached_stage_of_a_run_is_recomputed(tmp_path):
    from prefpred.run import run

    cfg = tmp_path / "run.toml"
    cfg.write_text(RUN.replace("OUT", str(tmp_path / "out")))
    first = run(cfg, progress=False, say=lambda s: None)
    cached = tmp_path / "out" / "test" / "prior.parquet"
    cached.write_bytes(b"PAR1 not really")
    messages = []
    second = run(cfg, progress=False, say=messages.append)
    assert not any("prior: test logits reused" in m for m in messages)
    assert pl.read_csv(second.submission).equals(pl.read_csv(first.submission))


def test_corrupt_checkpoints_and_streams_are_not_resumed_from(tmp_path):
    import torch

    from prefpred.models.backbone import inference, train

    ckpt = tmp_path / "ckpt"
    lin = torch.nn.Linear(2, 3)
    opt = torch.optim.AdamW(lin.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    good = train.save_checkpoint(ckpt, 1, "k", dict(lin.state_dict()), opt, sched, keep=3)
    bad = train.save_checkpoint(ckpt, 2, "k", dict(lin.state_dict()), opt, sched, keep=3)
    (bad / "trainable.safetensors").write_bytes(b"\x00" * 10)
    assert train.latest_checkpoint(ckpt, "k") == good
    stream = tmp_path / "stream"
    out = inference.run_batches(lambda rows: np.ones((len(rows), 3)), np.full(10, 4), out_dim=3,
                                max_tokens=8, stream_dir=stream, meta={"m": 1}, progress=False)
    chunk = next(stream.glob("chunk_*.npz"))
    chunk.write_bytes(b"PK truncated")
    again = inference.run_batches(lambda rows: np.ones((len(rows), 3)), np.full(10, 4),
                                  out_dim=3, max_tokens=8, stream_dir=stream, meta={"m": 1},
                                  progress=False)
    assert np.array_equal(out, again)


def test_an_unreadable_feature_cache_is_recomputed(tmp_path, kaggle_table, capsys):
    from prefpred.features import FeatureConfig
    from prefpred.features.cache import FeatureCache

    table = kaggle_table.take(np.arange(30))
    cache = FeatureCache(tmp_path, FeatureConfig())
    frame, path, computed = cache.build(table)
    assert computed
    path.write_bytes(path.read_bytes()[:200])
    again, _, computed = cache.build(table)
    assert computed and again.equals(frame)
    assert "unreadable" in capsys.readouterr().err


# ------------------------------------------------------------------------- Ctrl-C
def test_ctrl_c_prints_one_line_and_exits_130(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefpred.cli", "cv", "--competition", COMP, "--data", KAGGLE,
         "--model", "lgbm", "--param", "n_estimators=100000", "--param",
         "early_stopping_rounds=0", "--param", "feature_cache=''", "--run-dir", tmp_path],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        import time

        deadline = time.time() + 120
        while time.time() < deadline and not list(tmp_path.rglob("cv_key.json")):
            time.sleep(0.2)  # wait until the command is fitting
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == [
        "prefpred: interrupted (finished stages are kept; re-run to resume)"]
