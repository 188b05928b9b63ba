"""``prefpred run``: the whole job from a TOML, its reuse of finished stages, and its errors."""

import json
import re

import numpy as np
import polars as pl
import pytest
from conftest import KAGGLE

from prefpred.errors import ConfigError
from prefpred.run import run
from prefpred.run_config import read_run_config


def _config(tmp_path, body: str, name: str = "cfg.toml"):
    path = tmp_path / name
    path.write_text(body.replace("OUT", str(tmp_path / "out")))
    return path


BASE = """
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
params = { symmetric = false, smoothing = 0 }

[stack]
method = "auto"
candidates = ["blend", "logistic"]

[calibration]
method = "auto"
candidates = ["temperature", "vector"]
"""


def test_run_end_to_end_with_holdout(tmp_path):
    messages = []
    res = run(_config(tmp_path, BASE), progress=False, say=messages.append)
    out = tmp_path / "out"
    # submission: valid, one row per held-out test id, provenance beside it
    sub = pl.read_csv(res.submission, infer_schema=False)
    test = pl.read_csv(out / "data" / "test.csv", infer_schema=False)
    assert sub["id"].to_list() == test["id"].to_list()
    prov = json.loads((out / "submission.csv.provenance.json").read_text())
    assert prov["final"]["model"] == res.final_method.split(" + ")[0]
    assert {m["label"] for m in prov["base_models"]} == {"prior", "prior-raw"}
    # the final choice is the best out-of-fold candidate among the stacks and calibrations
    overall = res.oof_scores.filter(pl.col("group") == "ALL")
    cands = overall.filter(pl.col("model").is_in(["blend", "stack:logistic"])
                           & pl.col("calibration").is_in(["none", "temperature", "vector"]))
    assert res.final_oof_log_loss == pytest.approx(cands["log_loss"].min())
    # the held-out labels were scored, never trained on
    assert res.holdout_scores is not None
    held = set(pl.read_csv(out / "data" / "test_labelled.csv", infer_schema=False)["id"])
    oof = pl.read_parquet(out / "cv" / "prior" / "oof.parquet")
    assert not held & set(oof["id"].to_list())
    # the report holds every section
    html = res.report.read_text()
    for title in ("Scores of every model", "Log loss per source", "Held-out test rows",
                  "Reliability", "Log loss by pair length", "Confusion matrix", "Timings",
                  "data:image/png;base64,"):
        assert title in html, title
    record = json.loads((out / "run.json").read_text())
    assert record["final"]["oof_log_loss"] == pytest.approx(res.final_oof_log_loss)
    # the report times itself (drawing its figures takes a measurable while) and the whole run
    shown = dict(re.findall(r'<td class="l">([^<]+)</td><td class="">([\d.]+)</td>', html))
    assert 0 < float(shown["report"]) <= record["timings_s"]["report"]
    assert float(shown["total"]) <= record["timings_s"]["total"]


def test_rerun_reuses_finished_stages_and_resumes(tmp_path):
    cfg = _config(tmp_path, BASE)
    run(cfg, progress=False, say=lambda s: None)
    out = tmp_path / "out"
    fold_file = out / "cv" / "prior" / "fold_1.parquet"
    first_mtime = fold_file.stat().st_mtime_ns
    (out / "cv" / "prior-raw" / "fold_2.parquet").unlink()  # as if interrupted there
    messages = []
    res = run(cfg, progress=False, say=messages.append)
    assert fold_file.stat().st_mtime_ns == first_mtime  # finished folds were not refitted
    assert (out / "cv" / "prior-raw" / "fold_2.parquet").exists()
    assert any("prior: test logits reused" in m for m in messages)
    assert res.submission.exists()


def test_run_with_a_test_file_and_a_single_model(tmp_path, cli):
    test = tmp_path / "test.csv"
    pl.read_csv(KAGGLE, infer_schema=False).head(30).select(
        "id", "prompt", "response_a", "response_b").write_csv(test)
    body = f"""
[run]
competition = "lmsys-chatbot-arena"
out_dir = "OUT"
folds = 3
[data]
test = "{test}"
[[models]]
name = "prior"
[stack]
method = "none"
[calibration]
method = "temperature"
[output]
submission = "{tmp_path / 'sub.csv'}"
report = "{tmp_path / 'report.html'}"
"""
    res = cli("run", _config(tmp_path, body), "--quiet")
    assert res.code == 0, res.err
    assert "final: prior + temperature" in res.out
    assert cli("validate-submission", tmp_path / "sub.csv", "--competition",
               "lmsys-chatbot-arena", "--test", test).code == 0
    p = pl.read_csv(tmp_path / "sub.csv").select("winner_model_a", "winner_model_b",
                                                 "winner_tie").to_numpy()
    assert np.allclose(p.sum(1), 1) and (tmp_path / "report.html").exists()


def test_without_a_stacker_the_pipeline_holds_the_chosen_model(tmp_path, cli):
    test = tmp_path / "test.csv"
    pl.read_csv(KAGGLE, infer_schema=False).head(30).select(
        "id", "prompt", "response_a", "response_b").write_csv(test)
    body = BASE.replace("[data.holdout]\nfraction = 0.2\n", f'[data]\ntest = "{test}"\n') \
        .replace('method = "auto"\ncandidates = ["blend", "logistic"]', 'method = "none"')
    res = run(_config(tmp_path, body), progress=False, say=lambda s: None)
    final = res.final_method.split(" + ")[0]
    pipeline = json.loads((tmp_path / "out" / "pipeline.json").read_text())
    assert [e["label"] for e in pipeline["base_models"]] == [final]
    assert pipeline["stacker"] is None
    assert cli("predict", tmp_path / "out", "--test", test, "--out", tmp_path / "p.csv").code == 0
    cols = ["winner_model_a", "winner_model_b", "winner_tie"]
    np.testing.assert_allclose(pl.read_csv(tmp_path / "p.csv").select(cols).to_numpy(),
                               pl.read_csv(res.submission).select(cols).to_numpy(), atol=2e-6)


@pytest.mark.parametrize("edit,message", [
    (lambda s: s.replace('name = "prior"\n\n[[models]]', 'name = "nope"\n\n[[models]]'),
     "unknown model 'nope'"),
    (lambda s: s.replace("[data.holdout]", "[data]\ntest = 'x.csv'\n[data.holdout]"),
     "not both"),
    (lambda s: s.replace('label = "prior-raw"', 'label = "prior"'), "labels must be unique"),
    (lambda s: s.replace('method = "auto"\ncandidates = ["blend", "logistic"]',
                         'method = "magic"'), "[stack] method = 'magic'"),
    (lambda s: s.replace('competition = "lmsys-chatbot-arena"\n', ""),
     "[run] missing key 'competition'"),
])
def test_config_errors(tmp_path, cli, edit, message):
    path = _config(tmp_path, edit(BASE))
    with pytest.raises(ConfigError, match=re.escape(message)):
        read_run_config(path)
    res = cli("run", path)
    assert res.code == 2 and message in res.err and len(res.err.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "submission.csv").exists()


def test_an_unchanged_rerun_reuses_every_stage(tmp_path):
    cfg = _config(tmp_path, BASE)
    first = run(cfg, progress=False, say=lambda s: None)
    report_bytes = first.report.read_bytes()
    messages = []
    second = run(cfg, progress=False, say=messages.append)
    assert any("stacking and calibration scores reused" in m for m in messages)
    assert any("submission and report reused" in m for m in messages)
    assert second.report.read_bytes() == report_bytes  # kept, not redrawn
    assert second.final_oof_log_loss == first.final_oof_log_loss
    assert "submission + report (reused)" in second.timings
    # another calibration choice: the stacking scores and the outputs are computed again
    cfg.write_text(cfg.read_text().replace('candidates = ["temperature", "vector"]',
                                           'candidates = ["temperature"]'))
    messages = []
    run(cfg, progress=False, say=messages.append)
    assert not any("reused" in m and "logits" not in m for m in messages)


def test_base_models_in_worker_processes_give_the_same_run(tmp_path):
    one = run(_config(tmp_path, BASE, "one.toml"), progress=False, say=lambda s: None)
    body = BASE.replace("folds = 3", "folds = 3\njobs = 2").replace('"OUT"', '"OUT2"')
    two = run(_config(tmp_path, body.replace("OUT2", str(tmp_path / "out2")), "two.toml"),
              progress=False, say=lambda s: None)
    assert pl.read_csv(one.submission).equals(pl.read_csv(two.submission))
    for label in ("prior", "prior-raw"):
        assert pl.read_parquet(tmp_path / "out" / "cv" / label / "oof.parquet").equals(
            pl.read_parquet(tmp_path / "out2" / "cv" / label / "oof.parquet"))
