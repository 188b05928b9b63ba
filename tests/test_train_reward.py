"""prefpred train-reward: the pairwise losses (against finite differences and the tie models'
own likelihoods), the tie parameter recovered from simulated data, and the saved folder loaded
by plain transformers in a process that never imports prefpred, scoring what score-rewards
scores."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import polars as pl
import pytest
import torch
from conftest import kaggle_files
from scipy.special import log_expit

from prefpred.labels import TIE, A, B
from prefpred.rewards.losses import reward_loss, training_targets
from prefpred.rewards.models import Davidson, RaoKupper, load_tie_model

pytestmark = pytest.mark.usefixtures("torch_one_thread")

TINY = ["--param", "max_length=64", "--param", "train_tokens=2048", "--param", "lr=2e-3",
        "--param", "warmup_ratio=0.0", "--param", "checkpoint_every=0"]


def _raw(loss: str, value: float) -> torch.Tensor:
    return torch.tensor(value if loss == "davidson" else np.log(value), dtype=torch.float64,
                        requires_grad=True)


# --------------------------------------------------------------------------- losses
@pytest.mark.parametrize("loss", ["bt", "davidson", "rao-kupper"])
def test_loss_gradients_match_finite_differences(loss):
    rng = np.random.default_rng(0)
    n = 12
    d = torch.tensor(rng.normal(0, 2, n), dtype=torch.float64, requires_grad=True)
    soft = rng.dirichlet(np.ones(3), n)
    two_class = torch.tensor(np.arange(n) % 4 == 0)
    soft[two_class.numpy(), TIE] = 0.0
    soft /= soft.sum(1, keepdims=True)
    targets = torch.tensor(soft)
    weights = torch.tensor(rng.uniform(0.5, 2.0, n))
    if loss == "bt":
        assert torch.autograd.gradcheck(
            lambda d_: reward_loss(d_, targets, loss, None, two_class, weights), (d,))
    else:
        raw = _raw(loss, 0.7)
        assert torch.autograd.gradcheck(
            lambda d_, r_: reward_loss(d_, targets, loss, r_, two_class, weights), (d, raw))


@pytest.mark.parametrize(("loss", "model", "tie"), [("davidson", Davidson, -0.4),
                                                    ("rao-kupper", RaoKupper, 0.6)])
def test_tie_aware_losses_are_the_tie_models_likelihood(loss, model, tie):
    rng = np.random.default_rng(1)
    d = rng.normal(0, 2, 200)
    y = rng.integers(0, 3, 200)
    oracle = model(position_bias=False)
    oracle.coef_ = np.array([1.0, 0.0, tie])  # scale 1, no position bias: the reward margin
    expected = oracle.nll(d, y)
    got = reward_loss(torch.tensor(d), torch.tensor(np.eye(3)[y]), loss,
                      torch.tensor(tie if loss == "davidson" else np.log(tie), dtype=torch.float64))
    assert float(got) == pytest.approx(expected, rel=1e-10)
    # a row judged without a tie option: P(A) / (P(A) + P(B))
    p = oracle.predict_proba(d)
    yy = np.where(y == TIE, A, y)
    expected_two = -np.mean(np.log(p[np.arange(200), yy] / (p[:, A] + p[:, B])))
    got_two = reward_loss(torch.tensor(d), torch.tensor(np.eye(3)[yy]), loss,
                          torch.tensor(tie if loss == "davidson" else np.log(tie),
                                       dtype=torch.float64),
                          two_class=torch.ones(200, dtype=torch.bool))
    assert float(got_two) == pytest.approx(expected_two, rel=1e-10)


def test_bradley_terry_drops_ties_and_is_logistic_on_the_rest():
    y = np.array([A, TIE, B, TIE, A])
    soft = np.eye(3)[y]
    soft[0] = [0.6, 0.2, 0.2]
    kept, targets, two_class = training_targets(y, soft, None, "bt")
    assert kept.tolist() == [0, 2, 4] and two_class.all()
    np.testing.assert_allclose(targets[0], [0.75, 0.25, 0.0])  # tie mass moved to A and B
    d = np.array([0.3, -1.0, 2.0, 0.5, -0.7])
    got = reward_loss(torch.tensor(d[kept]), torch.tensor(np.eye(3)[y[kept]]), "bt")
    expected = -np.mean([log_expit(d[0]), log_expit(-d[2]), log_expit(d[4])])
    assert float(got) == pytest.approx(expected, rel=1e-10)
    # the tie-aware losses keep every row; rows without a tie option are two-class
    kept, _, two_class = training_targets(y, None, np.array([1, 1, 0, 1, 1], bool), "davidson")
    assert kept.tolist() == [0, 1, 2, 3, 4] and two_class.tolist() == [0, 0, 1, 0, 0]


@pytest.mark.parametrize(("loss", "model", "true_tie"), [("davidson", Davidson, np.log(0.8)),
                                                         ("rao-kupper", RaoKupper, 0.5)])
def test_tie_parameter_is_learned_with_the_rewards(loss, model, true_tie):
    """Rewards linear in response features and the tie parameter, fitted jointly by the training
    loss, recover the simulation's values."""
    rng = np.random.default_rng(2)
    n, k = 20000, 3
    xa, xb = rng.normal(size=(n, k)), rng.normal(size=(n, k))
    w_true = np.array([1.5, -1.0, 0.5])
    sim = model(position_bias=False)
    sim.coef_ = np.array([1.0, 0.0, true_tie])
    y = sim.simulate((xa - xb) @ w_true, seed=3)
    assert 0.1 < (y == TIE).mean() < 0.5
    w = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    raw = _raw(loss, 1.0)
    opt = torch.optim.LBFGS([w, raw], max_iter=200, line_search_fn="strong_wolfe")
    diff, targets = torch.tensor(xa - xb), torch.tensor(np.eye(3)[y])

    def closure():
        opt.zero_grad()
        value = reward_loss(diff @ w, targets, loss, raw)
        value.backward()
        return value

    opt.step(closure)
    fitted = float(raw.detach()) if loss == "davidson" else float(raw.detach().exp())
    assert fitted == pytest.approx(true_tie, abs=0.06)
    np.testing.assert_allclose(w.detach().numpy(), w_true, atol=0.08)


# --------------------------------------------------------------------------- the command
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from prefpred.testing import tiny_backbone

    out = kaggle_files(tmp_path_factory.mktemp("rm"), 40, 10)
    texts = pl.read_csv(out["train"], infer_schema=False)["response_a"].to_list()
    for arch in ("bert", "llama"):
        out[arch] = tiny_backbone(arch, out["base"] / f"tiny-{arch}", texts=texts)
    return out


@pytest.fixture(scope="module")
def trained(files):
    """A reward model per architecture (bert: davidson; llama: rao-kupper) and a bt one."""
    from prefpred.cli import main

    dirs = {}
    for arch, loss in (("bert", "davidson"), ("llama", "rao-kupper"), ("bert", "bt")):
        out = files["base"] / f"rm-{arch}-{loss}"
        code = main(["train-reward", "--competition", "lmsys-chatbot-arena", "--data",
                     str(files["train"]), "--backbone", str(files[arch]), "--loss", loss,
                     "--out", str(out), "--param", "epochs=2", *TINY])
        assert code == 0
        dirs[(arch, loss)] = out
    return dirs


PLAIN = r"""
import csv, json, sys
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

test_csv, out = sys.argv[1], sys.argv[2]
rows = list(csv.DictReader(open(test_csv, encoding="utf-8")))
result = {}
for folder in sys.argv[3:]:
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    scores = []
    for row in rows:
        prompt = json.loads(row["prompt"])
        pair = []
        for side in ("response_a", "response_b"):
            response = json.loads(row[side])
            messages = []
            for i in range(max(len(prompt), len(response))):
                if i < len(prompt):
                    messages.append({"role": "user", "content": prompt[i] or ""})
                if i < len(response):
                    messages.append({"role": "assistant", "content": response[i] or ""})
            text = tok.apply_chat_template(messages, tokenize=False)
            enc = tok(text, add_special_tokens=False, truncation=True, return_tensors="pt")
            with torch.no_grad():
                pair.append(float(model(**enc).logits[0, 0]))
        scores.append([row["id"], *pair])
    result[folder] = scores
assert "prefpred" not in sys.modules
json.dump(result, open(out, "w"))
"""


def test_saved_folder_scores_the_same_with_plain_transformers(files, trained, cli, tmp_path):
    from transformers import AutoConfig

    folders = [trained[("bert", "davidson")], trained[("llama", "rao-kupper")]]
    for folder in folders:
        names = {p.name for p in folder.iterdir()}
        assert {"config.json", "model.safetensors", "prefpred_reward.json"} <= names
        assert AutoConfig.from_pretrained(folder).num_labels == 1
        assert not any("lora" in n for n in names)
    assert json.loads((folders[0] / "config.json").read_text())["architectures"] == [
        "BertForSequenceClassification"]
    assert json.loads((folders[1] / "config.json").read_text())["pad_token_id"] is not None
    script = tmp_path / "plain.py"
    script.write_text(PLAIN)
    env = {"PATH": os.environ.get("PATH", ""), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    plain_out = tmp_path / "plain.json"
    proc = subprocess.run([sys.executable, "-I", str(script), str(files["test"]),
                           str(plain_out), *map(str, folders)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    plain = json.loads(plain_out.read_text())
    for folder in folders:
        scores = tmp_path / f"{folder.name}.csv"
        res = cli("score-rewards", "--model", folder, "--data", files["test"], "--out", scores,
                  "--batch-size", "4")
        assert res.code == 0, res.err
        ours = pl.read_csv(scores, schema_overrides={"id": pl.String})
        theirs = np.array([[float(a), float(b)] for _, a, b in plain[str(folder)]])
        assert ours["id"].to_list() == [i for i, _, _ in plain[str(folder)]]
        np.testing.assert_allclose(ours.select("reward_a", "reward_b").to_numpy(), theirs,
                                   atol=1e-5)
        assert np.ptp(theirs) > 1e-4  # the rewards differ between responses


def test_training_moves_the_rewards_and_the_tie_parameter(trained):
    from prefpred.rewards.train import read_reward_info

    for (_arch, loss), folder in trained.items():
        info = read_reward_info(folder)
        assert info["loss"] == loss and info["max_length"] == 64
        assert info["training"]["steps"] > 0 and np.isfinite(info["training"]["final_loss"])
        if loss == "bt":
            assert "tie_parameter" not in info
            assert info["training"]["ties_dropped"] > 0
            assert info["training"]["pairs_trained"] + info["training"]["ties_dropped"] == 40
        else:
            tie = info["tie_parameter"]
            assert tie["name"] == {"davidson": "log_nu", "rao-kupper": "eta"}[loss]
            assert tie["value"] != pytest.approx(info["training"]["initial_tie_parameter"],
                                                 abs=1e-6)
            assert info["params"] == {"scale": 1.0, "position_bias": 0.0,
                                      tie["name"]: tie["value"]}


def test_calibrate_rewards_starts_from_the_trained_tie_parameter(files, trained, cli, tmp_path):
    folder = trained[("bert", "davidson")]
    info = json.loads((folder / "prefpred_reward.json").read_text())
    scores = tmp_path / "scores.csv"
    assert cli("score-rewards", "--model", folder, "--data", files["train"],
               "--out", scores).code == 0
    res = cli("calibrate-rewards", "fit", "--scores", scores, "--out", tmp_path / "cal",
              "--folds", "2", "--init-from", folder)
    assert res.code == 0, res.err
    assert "as-trained" in res.out
    report = json.loads((tmp_path / "cal" / "report.json").read_text())
    assert report["init_from"]["params"]["log_nu"] == pytest.approx(info["params"]["log_nu"])
    # labels without ties: P(tie) at equal rewards is the rate the model was trained with
    no_ties = tmp_path / "no_ties.csv"
    pl.read_csv(scores).filter(pl.col("label") != "TIE").write_csv(no_ties)
    res = cli("calibrate-rewards", "fit", "--scores", no_ties, "--out", tmp_path / "cal2",
              "--folds", "2", "--model", "davidson", "--init-from", folder)
    assert res.code == 0, res.err
    fitted = load_tie_model(tmp_path / "cal2" / "davidson.json").params_
    assert fitted["log_nu"] == pytest.approx(info["tie_parameter"]["value"], abs=1e-9)
    # a Bradley-Terry model has no tie parameter to start from
    res = cli("calibrate-rewards", "fit", "--scores", scores, "--out", tmp_path / "cal3",
              "--init-from", trained[("bert", "bt")])
    assert res.code == 2 and "bt loss" in res.err and len(res.err.strip().splitlines()) == 1
    # a hand-edited prefpred_reward.json: refused in one line by both readers
    edited = tmp_path / "edited"
    shutil.copytree(folder, edited)
    for change, column in (({"tie_parameter": {**info["tie_parameter"], "value": 1e9}},
                            "tie_parameter"),
                           ({"tie_parameter": {**info["tie_parameter"], "value": True}},
                            "tie_parameter"),
                           ({"max_length": "abc"}, "max_length"), ({"max_length": 4}, "max_length")):
        (edited / "prefpred_reward.json").write_text(json.dumps({**info, **change}))
        if column == "tie_parameter":
            res = cli("calibrate-rewards", "fit", "--scores", scores, "--out", tmp_path / "cal4",
                      "--init-from", edited)
        else:
            res = cli("score-rewards", "--model", edited, "--data", files["train"],
                      "--out", tmp_path / "cal4.csv")
        assert res.code == 2 and f"column '{column}'" in res.err, (change, res.err)
        assert len(res.err.strip().splitlines()) == 1
        assert not (tmp_path / "cal4").exists() and not (tmp_path / "cal4.csv").exists()


# --------------------------------------------------------------------------- bad input
def _one_line_error(res, *needles):
    assert res.code == 2, res.out
    lines = res.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prefpred: error: "), res.err
    for needle in needles:
        assert needle in res.err, res.err


def test_bad_input_is_one_line_and_writes_nothing(files, cli, tmp_path):
    base = ["train-reward", "--competition", "lmsys-chatbot-arena", "--data", files["train"],
            "--backbone", files["bert"]]
    out = tmp_path / "rm"
    _one_line_error(cli(*base, "--out", out, "--loss", "davidsn"), "did you mean 'davidson'")
    config = tmp_path / "reward.toml"
    config.write_text("[params]\nloss = 'bt'\nlora_rr = 8\n")
    _one_line_error(cli(*base, "--out", out, "--config", config), "lora_rr",
                    "did you mean 'lora_r'")
    _one_line_error(cli(*base, "--out", out, "--param", "tie_rate=1.5"), "tie_rate")
    _one_line_error(cli(*base, "--out", out, "--param", "finetune=frozen"), "finetune")
    _one_line_error(cli(*base, "--out", files["train"]), "input")
    _one_line_error(cli(*base, "--out", files["bert"]), "input")
    _one_line_error(cli(*base, "--out", files["base"]), "holds the input")
    # a NaN passes "lr <= 0": refused once for every parameter dataclass; other ranges
    for bad, needle in (("lr=nan", "lr=nan: must be a finite number"),
                        ("epochs=nan", "epochs=nan"), ("weight_decay=-1", "weight_decay"),
                        ("lora_alpha=-4", "lora_alpha"), ("max_grad_norm=0", "max_grad_norm")):
        _one_line_error(cli(*base, "--out", out, "--param", bad), needle)
    # the backbone given as a parameter is an input too, and --out may not lie inside it
    no_option = base[:-2]
    _one_line_error(cli(*no_option, "--param", f"backbone={files['bert']}", "--out",
                        files["bert"]), "input")
    _one_line_error(cli(*base, "--out", files["bert"] / "inner"), "inside the input folder")
    # one class only: nothing to learn
    one = tmp_path / "one" / "train.csv"
    one.parent.mkdir()
    pl.read_csv(files["train"], infer_schema=False).with_columns(
        winner_model_a=pl.lit("1"), winner_model_b=pl.lit("0"), winner_tie=pl.lit("0")
    ).write_csv(one)
    _one_line_error(cli(*base[:4], one, *base[5:], "--out", out, "--loss", "bt"),
                    "every label kept for the bt loss is A")
    shutil.rmtree(one.parent)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["reward.toml"]
