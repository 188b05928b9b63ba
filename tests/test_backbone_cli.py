"""The backbone through the command line: cv, predict and submit, offline, on a tiny model."""

from __future__ import annotations

import json

import polars as pl
import pytest
from conftest import kaggle_files

TINY = ["--param", "max_length=96", "--param", "train_tokens=1536", "--param", "progress=false",
        "--param", "max_steps=2", "--param", "checkpoint_every=1"]


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return kaggle_files(tmp_path_factory.mktemp("cli"), 48, 12, backbone=True)


def test_cv_with_a_tiny_backbone_writes_out_of_fold_logits(cli, tmp_path, files):
    res = cli("cv", "--competition", "lmsys-chatbot-arena", "--data", files["train"],
              "--model", "backbone", "--backbone", files["model"], "--folds", "2",
              "--run-dir", tmp_path, *TINY)
    assert res.code == 0, res.err
    assert "lmsys-kaggle" in res.out and "log_loss" in res.out
    out = tmp_path / "lmsys-chatbot-arena" / "backbone"
    oof = pl.read_parquet(out / "oof.parquet")
    assert oof.height == 48 and oof["fold"].n_unique() == 2
    assert oof.select(pl.col("logit_A").is_finite().all()).item()
    scores = json.loads((out / "scores.json").read_text())
    assert scores["params"]["backbone"] == str(files["model"])
    assert scores["params"]["max_steps"] == 2
    for k in (0, 1):  # per fold: a checkpoint and a saved artifact
        work = out / f"fold_{k}_work"
        assert (work / "checkpoints" / "step_000002" / "trainable.safetensors").exists()
        assert (work / "artifact" / "prefpred_config.json").exists()
    # the artifact of a fold predicts offline, as logits or as a validated submission
    artifact = out / "fold_0_work" / "artifact"
    res = cli("predict", artifact, "--test", files["test"], "--out", tmp_path / "pred.parquet")
    assert res.code == 0, res.err
    pred = pl.read_parquet(tmp_path / "pred.parquet")
    assert pred.height == 12 and {"logit_A", "prob_TIE"} <= set(pred.columns)
    assert pred.select((pl.col("prob_A") + pl.col("prob_B") + pl.col("prob_TIE") - 1).abs()
                       .max()).item() < 1e-9
    sub = tmp_path / "sub.csv"
    res = cli("predict", artifact, "--test", files["test"], "--out", sub, "--competition",
              "lmsys-chatbot-arena")
    assert res.code == 0, res.err
    assert "validated" in res.out and not (tmp_path / "sub.csv.parts").exists()
    res = cli("validate-submission", sub, "--competition", "lmsys-chatbot-arena",
              "--test", files["test"])
    assert res.code == 0, res.err
    # submit loads the saved artifact instead of training (epochs=0 keeps its weights)
    sub2 = tmp_path / "sub2.csv"
    submit = ["submit", "--competition", "lmsys-chatbot-arena", "--train", files["train"],
              "--test", files["test"], "--out", sub2, "--model", "backbone", "--backbone",
              files["model"], "--param", f"init_from='{artifact}'", "--param", "epochs=0",
              "--param", "progress=false", "--cv-folds", "0", "--run-dir", tmp_path / "runs"]
    res = cli(*submit)  # without the artifact's max_length=96: refused, not silently wrong
    assert res.code == 2 and "max_length=96" in res.err
    res = cli(*submit, "--param", "max_length=96")
    assert res.code == 0, res.err
    a = pl.read_csv(sub, infer_schema=False)
    b = pl.read_csv(sub2, infer_schema=False)
    assert a.equals(b)


def test_config_presets_and_errors(cli, tmp_path, files):
    config = tmp_path / "run.toml"
    config.write_text('[params]\nfinetune = "frozen"\nmax_length = 96\nepochs = 2\n'
                      'checkpoint_every = 0\n')
    res = cli("cv", "--competition", "lmsys-chatbot-arena", "--data", files["train"],
              "--config", config, "--backbone", files["model"], "--folds", "2",
              "--param", "progress=false", "--run-dir", tmp_path)
    assert res.code == 0, res.err
    scores = json.loads((tmp_path / "lmsys-chatbot-arena" / "backbone" / "scores.json")
                        .read_text())
    assert scores["params"]["finetune"] == "frozen" and scores["params"]["epochs"] == 2
    res = cli("cv", "--competition", "shared-all", "--config", "no-such-preset")
    assert res.code == 2 and "minilm-budget" in res.err and "\n" not in res.err.strip()
    bad = tmp_path / "bad.toml"
    bad.write_text("finetune = 'sideways'\n")
    res = cli("cv", "--competition", "shared-all", "--config", bad)
    assert res.code == 2 and "bad.toml" in res.err and "finetune" in res.err
    res = cli("cv", "--competition", "shared-all", "--backbone", "minilm", "--param", "rank=2")
    assert res.code == 2 and "unknown backbone parameter" in res.err
    res = cli("cv", "--competition", "shared-all", "--model", "prior", "--backbone", "minilm")
    assert res.code == 2 and "options of --model backbone" in res.err
    res = cli("predict", tmp_path, "--test", files["test"], "--out", tmp_path / "x.parquet")
    assert res.code == 2 and "not a prefpred backbone artifact" in res.err


def test_two_processes_train_and_predict_data_parallel(cli, tmp_path, files):
    """The distributed code paths (DDP training, sharded streamed inference) on two CPU
    processes with gloo, launched as `accelerate launch` / torchrun would on GPUs."""
    import subprocess
    import sys

    def launch(*args) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "-m", "prefpred.cli", *map(str, args)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                              env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})

    proc = launch("cv", "--competition", "lmsys-chatbot-arena", "--data", files["train"],
                  "--backbone", files["model"], "--folds", "2", "--only-fold", "0",
                  "--run-dir", tmp_path, *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("out-of-fold logits") == 2  # both processes finished the fold
    work = tmp_path / "lmsys-chatbot-arena" / "backbone" / "fold_0_work"
    assert list((work / "checkpoints").glob("step_*/state.json"))  # the main process wrote it
    artifact = work / "artifact"
    proc = launch("predict", artifact, "--test", files["test"], "--out", tmp_path / "dp.parquet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = cli("predict", artifact, "--test", files["test"], "--out", tmp_path / "one.parquet")
    assert res.code == 0, res.err
    cols = ["logit_A", "logit_B", "logit_TIE"]
    dp = pl.read_parquet(tmp_path / "dp.parquet")
    one = pl.read_parquet(tmp_path / "one.parquet")
    assert dp["id"].equals(one["id"])
    assert (dp.select(cols).to_numpy() - one.select(cols).to_numpy()).max() < 1e-5
