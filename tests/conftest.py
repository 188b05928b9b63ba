"""Shared fixtures: where the real data lives, and a CLI runner."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("PREFPRED_DATA_ROOT", PROJECT_ROOT.parent / "shared" / "data"))
KAGGLE = DATA / "lmsys-kaggle-sample" / "train.csv"
MT_BENCH = DATA / "mt-bench-human"
AUTOJ = DATA / "autoj-pairwise" / "testdata_pairwise.jsonl"
PANDALM = DATA / "pandalm" / "testset-v1.json"
LLMEVAL2 = DATA / "llmeval2" / "LLMEval2_benchmark.jsonl"


def kaggle_files(base: Path, n_train: int, n_test: int, backbone: bool = False) -> dict:
    """The first ``n_train`` Kaggle sample rows as ``base/train.csv``, the next ``n_test``
    without labels as ``base/test.csv`` and, with ``backbone``, a tiny random Llama whose
    tokenizer learnt from the responses (``base/tiny-llama``)."""
    import polars as pl

    raw = pl.read_csv(KAGGLE, infer_schema=False)
    raw.head(n_train).write_csv(base / "train.csv")
    raw.slice(n_train, n_test).drop(["winner_model_a", "winner_model_b", "winner_tie"]) \
        .write_csv(base / "test.csv")
    out = {"base": base, "train": base / "train.csv", "test": base / "test.csv"}
    if backbone:
        from prefpred.testing import tiny_backbone

        out["model"] = tiny_backbone("llama", base / "tiny-llama",
                                     texts=raw["response_a"].head(100).to_list())
    return out


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys):
    """Run ``prefpred ARGS`` in-process; returns exit code, stdout and stderr."""
    from prefpred.cli import main

    def run(*args: str | Path) -> CliResult:
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def kaggle_table():
    from prefpred.data.formats import load_table

    return load_table(KAGGLE)


@pytest.fixture(scope="session")
def shared_all():
    from prefpred.competitions import load_competition

    return load_competition("shared-all").load_train()


@pytest.fixture
def torch_one_thread():
    """Tiny models run fastest on one thread (and do not fight over shared cores)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
