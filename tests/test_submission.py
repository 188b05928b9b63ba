import json

import numpy as np
import polars as pl
import pytest
from conftest import KAGGLE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.metrics import log_loss

from prefpred.competitions import load_competition
from prefpred.data.formats import load_table
from prefpred.errors import PrefpredError, SubmissionError
from prefpred.submission import provenance_path, validate_submission, write_submission

RAW = pl.read_csv(KAGGLE, infer_schema=False)


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.integers(0, 999), min_size=1, max_size=40, unique=True),
       keep_index=st.booleans(), keep_labels=st.booleans())
def test_submit_on_any_kaggle_format_test_file(cli, tmp_path_factory, rows, keep_index, keep_labels):
    """Any Kaggle-format test file: the submission validates and sklearn scores it."""
    tmp = tmp_path_factory.mktemp("any")
    df = RAW[rows]
    if not keep_index:
        df = df.drop("")
    if not keep_labels:
        df = df.select([c for c in df.columns if not c.startswith("winner_") and
                        c not in ("model_a", "model_b")])
    test = tmp / "test.csv"
    df.write_csv(test)
    out = tmp / "sub.csv"
    res = cli("submit", "--competition", "lmsys-chatbot-arena", "--train", KAGGLE, "--test", test,
              "--model", "prior", "--out", out, "--cv-folds", "0")
    assert res.code == 0, res.err
    assert cli("validate-submission", out, "--competition", "lmsys-chatbot-arena",
               "--test", test).code == 0
    sub = pl.read_csv(out, infer_schema=False)
    assert sub["id"].to_list() == df["id"].to_list()
    if keep_labels:
        y = np.argmax(df.select("winner_model_a", "winner_model_b", "winner_tie")
                      .cast(pl.Int64).to_numpy(), 1)
        p = sub.select("winner_model_a", "winner_model_b", "winner_tie").cast(pl.Float64).to_numpy()
        assert 0.9 < log_loss(y, p, labels=[0, 1, 2]) < 1.3


def test_provenance_records_what_made_the_file(cli, tmp_path):
    test = tmp_path / "test.csv"
    RAW.head(25).drop("").write_csv(test)
    out = tmp_path / "s.csv"
    res = cli("submit", "--competition", "lmsys-chatbot-arena", "--train", KAGGLE, "--test", test,
              "--out", out, "--cv-folds", "3", "--run-dir", tmp_path / "runs")
    assert res.code == 0, res.err
    assert "CV log loss" in res.out
    prov = json.loads(provenance_path(out).read_text())
    assert prov["model"] == "prior" and prov["competition"] == "lmsys-chatbot-arena"
    assert prov["cv"]["n_folds"] == 3 and prov["cv"]["scores"][-1]["group"] == "ALL"
    assert str(KAGGLE) in prov["data"]["train"] and len(prov["data"]["train"][str(KAGGLE)]) == 64
    assert prov["rows"] == 25
    assert "git_commit" in prov


def test_writer_refuses_bad_probabilities_and_leaves_nothing(tmp_path):
    comp = load_competition("lmsys-chatbot-arena")
    test = load_table(KAGGLE).take(np.arange(5))
    out = tmp_path / "s.csv"
    with pytest.raises(PrefpredError, match="row 1 has probabilities"):
        write_submission(out, test, np.full((5, 3), np.nan), comp)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_writer_validates_before_renaming(tmp_path, monkeypatch):
    comp = load_competition("lmsys-chatbot-arena")
    test = load_table(KAGGLE).take(np.arange(5))
    out = tmp_path / "s.csv"
    out.write_text("old content\n")

    def boom(*a, **k):
        raise SubmissionError("simulated grader rejection")

    monkeypatch.setattr("prefpred.submission.validate_submission", boom)
    with pytest.raises(SubmissionError):
        write_submission(out, test, np.full((5, 3), 1 / 3), comp)
    assert out.read_text() == "old content\n"  # the previous file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.csv"]


def test_wsdm_label_layout(tmp_path):
    comp = load_competition("wsdm-cup-multilingual-chatbot-arena")
    test = load_table(KAGGLE).take(np.arange(4))
    p = np.array([[0.5, 0.2, 0.3], [0.1, 0.3, 0.6], [0.4, 0.4, 0.2], [0.2, 0.7, 0.1]])
    out = write_submission(tmp_path / "w.csv", test, p, comp)
    sub = pl.read_csv(out, infer_schema=False)
    assert sub.columns == ["id", "winner"]
    # tie is not a class here: the larger of A and B wins
    assert sub["winner"].to_list() == ["model_a", "model_b", "model_a", "model_b"]
    pl.DataFrame({"id": sub["id"], "winner": ["model_a", "tie", "model_a", "model_b"]}).write_csv(out)
    with pytest.raises(SubmissionError, match="row 2, column 'winner'"):
        validate_submission(out, comp, test=test)


def test_row_sums_follow_the_graders_rounding(tmp_path):
    """mle-bench accepts a row whose sum rounds to 1 at 6 decimals (pandas' round), and only
    that: 1.0000004 passes, 1.0000006 does not."""
    comp = load_competition("lmsys-chatbot-arena")
    test = load_table(KAGGLE).take(np.arange(3))
    out = tmp_path / "s.csv"
    tie = [0.3333334, 0.0, 0.6000004]
    frame = pl.DataFrame({"id": test.ids, "winner_model_a": [0.3333333, 0.5, 0.2],
                          "winner_model_b": [0.3333333, 0.5, 0.2], "winner_tie": tie})
    frame.write_csv(out)
    assert pl.read_csv(out).drop("id").to_pandas().sum(axis=1).round(6).eq(1).all()
    validate_submission(out, comp, test=test)
    frame.with_columns(winner_tie=pl.Series([0.3333334, 0.0, 0.6000006])).write_csv(out)
    assert not pl.read_csv(out).drop("id").to_pandas().sum(axis=1).round(6).eq(1).all()
    with pytest.raises(SubmissionError, match="row 3"):
        validate_submission(out, comp, test=test)


def test_written_files_have_the_usual_permissions(tmp_path):
    import os
    import stat

    comp = load_competition("lmsys-chatbot-arena")
    test = load_table(KAGGLE).take(np.arange(3))
    out = write_submission(tmp_path / "s.csv", test, np.full((3, 3), 1 / 3), comp)
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~mask
