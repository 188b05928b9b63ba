"""FastChat MT-Bench human judgments, joined with the questions and the models' answers."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from prefpred.data.mapped import (
    finish_table,
    labels_from_column,
    require_columns,
    texts,
    turn_list,
    whole_numbers,
)
from prefpred.data.raw import read_jsonl
from prefpred.data.table import TURNS, PreferenceTable, Quirks, group_keys_from_prompt
from prefpred.data.text import stable_digest
from prefpred.errors import DataError
from prefpred.labels import LABEL_WORDS, TIE

#: FastChat's winner words: the usual vocabulary plus its two kinds of tie.
_MT_WINNER = {**LABEL_WORDS, "tie (inconsistent)": TIE, "tie (bothbad)": TIE}


def _mt_bench_files(path: Path) -> tuple[Path, Path, Path]:
    if path.is_dir():
        judgments = sorted(path.glob("human_judgments*.jsonl")) or sorted(path.glob("*judgment*.jsonl"))
        if not judgments:
            raise DataError("no human_judgments*.jsonl in the MT-Bench folder", file=path)
        judg = judgments[0]
        base = path
    else:
        judg, base = path, path.parent
    question, answers = base / "question.jsonl", base / "model_answer"
    if not question.exists():
        raise DataError("MT-Bench needs question.jsonl beside the judgments", file=question)
    if not answers.is_dir():
        raise DataError("MT-Bench needs a model_answer/ folder beside the judgments", file=answers)
    return judg, question, answers


def _questions_and_answers(question_file: Path, answer_dir: Path, quirks: Quirks, strict: bool
                           ) -> tuple[dict[int, list[str]], dict[tuple[str, int], list[str]]]:
    """Question turns by id, and each model's answer turns by (model, question id)."""
    questions = read_jsonl(question_file, quirks=quirks, strict=strict)
    require_columns(questions, ["question_id", "turns"], question_file)
    q_turns = {qid: turn_list(turns, file=question_file, row=i, column="turns")
               for i, (qid, turns) in enumerate(zip(
                   whole_numbers(questions, "question_id", question_file),
                   questions["turns"].to_list(), strict=True), 1)}
    answers: dict[tuple[str, int], list[str]] = {}
    for file in sorted(answer_dir.glob("*.jsonl")):
        for i, rec in enumerate(read_jsonl(file, quirks=quirks, strict=strict).to_dicts(), 1):
            try:
                key = (str(rec.get("model_id") or file.stem), int(rec["question_id"]))
                answers[key] = turn_list(rec["choices"][0]["turns"], file=file, row=i,
                                         column="choices")
            except (KeyError, IndexError, TypeError, ValueError):
                raise DataError("expected question_id and choices[0].turns", file=file,
                                row=i) from None
    return q_turns, answers


def _question_groups(first_turns: list[list[str]]) -> pl.Series:
    """Fold group per row from the question's first turn, normalised exactly like every other
    prompt, so that the same question in another source (Auto-J reuses MT-Bench questions) and
    the unjudged pairs of :func:`read_mt_bench_unjudged` share the group."""
    return group_keys_from_prompt(pl.DataFrame({"prompt": pl.Series(first_turns, dtype=TURNS)}))


def read_mt_bench(path: str | Path, *, source: str = "mt-bench-human", strict: bool = False
                  ) -> PreferenceTable:
    """FastChat MT-Bench human judgments joined with questions and model answers.

    Each vote is one row (several judges vote on the same pair), its ``votes`` the one vote with
    the judge's name (``anonymous`` without a judge field), so :mod:`prefpred.data.votes` can
    merge a pair's votes. A ``turn`` field of 2 makes a two-turn prompt. The fold group is the
    question, so one question never crosses folds.
    """
    judg, question_file, answer_dir = _mt_bench_files(Path(path))
    quirks = Quirks()
    votes = read_jsonl(judg, quirks=quirks, strict=strict)
    require_columns(votes, ["question_id", "model_a", "model_b", "winner"], judg)
    q_turns, answers = _questions_and_answers(question_file, answer_dir, quirks, strict)
    turn_col = (votes.select(pl.col("turn").fill_null(1)).pipe(whole_numbers, "turn", judg)
                if "turn" in votes.columns else [1] * votes.height)
    judges = (votes["judge"].cast(pl.String).fill_null("").to_list() if "judge" in votes.columns
              else [""] * votes.height)
    rows: dict[str, list] = {k: [] for k in ("id", "prompt", "response_a", "response_b", "model_a",
                                             "model_b", "first_turn")}
    for i, (qid, ma, mb, judge, turn) in enumerate(zip(
            whole_numbers(votes, "question_id", judg), texts(votes, "model_a", judg),
            texts(votes, "model_b", judg), judges, turn_col, strict=True), 1):
        if qid not in q_turns:
            raise DataError(f"question {qid} is not in {question_file.name}", file=judg, row=i,
                            column="question_id")
        if turn not in (1, 2):
            raise DataError(f"turn {turn} is not 1 or 2", file=judg, row=i, column="turn")
        for col, model in (("model_a", ma), ("model_b", mb)):
            if (model, qid) not in answers:
                raise DataError(f"no answer by {model} to question {qid} in {answer_dir}",
                                file=judg, row=i, column=col)
        rows["id"].append(f"mtbench-q{qid}-t{turn}-{ma}-vs-{mb}-{judge or i}")
        rows["prompt"].append(q_turns[qid][:turn])
        rows["response_a"].append(answers[(ma, qid)][:turn])
        rows["response_b"].append(answers[(mb, qid)][:turn])
        rows["model_a"].append(ma)
        rows["model_b"].append(mb)
        rows["first_turn"].append(q_turns[qid][:1])
    label = labels_from_column(votes["winner"], _MT_WINNER, judg, "winner")
    df = pl.DataFrame({k: v for k, v in rows.items() if k != "first_turn"},
                      schema_overrides={"prompt": TURNS, "response_a": TURNS, "response_b": TURNS})
    vote = pl.struct(judge=pl.Series([j or "anonymous" for j in judges], dtype=pl.String),
                     label=label)
    df = df.with_columns(label=label, group=_question_groups(rows["first_turn"]),
                         language=pl.lit("en"), votes=pl.concat_list(vote))
    return finish_table(df, source=source, file=judg, quirks=quirks)


def read_mt_bench_unjudged(path: str | Path, *, source: str = "mt-bench-unjudged",
                           strict: bool = False) -> PreferenceTable:
    """The pairs no human judged: every two models' turn-1 answers to a question of
    ``question.jsonl`` with no row in the judgments file for that question and unordered model
    pair (any turn). Unlabelled (the pseudo-label pool); the fold group is the question's, equal
    to the judged rows' group. Which model is A is a stable hash of the question and the pair.
    Ids: ``mtbench-q<question>-t1-<model A>-vs-<model B>-unjudged``.
    """
    judg, question_file, answer_dir = _mt_bench_files(Path(path))
    quirks = Quirks()
    votes = read_jsonl(judg, quirks=quirks, strict=strict)
    require_columns(votes, ["question_id", "model_a", "model_b"], judg)
    q_turns, answers = _questions_and_answers(question_file, answer_dir, quirks, strict)
    judged = {(qid, frozenset((ma, mb))) for qid, ma, mb in zip(
        whole_numbers(votes, "question_id", judg), texts(votes, "model_a", judg),
        texts(votes, "model_b", judg), strict=True)}
    models = sorted({m for m, _ in answers})
    rows: dict[str, list] = {k: [] for k in ("id", "prompt", "response_a", "response_b",
                                             "model_a", "model_b")}
    for qid in sorted(q_turns):
        for i, m1 in enumerate(models):
            for m2 in models[i + 1:]:
                if (qid, frozenset((m1, m2))) in judged or (m1, qid) not in answers \
                        or (m2, qid) not in answers:
                    continue
                ma, mb = (m1, m2) if int(stable_digest(f"{qid}|{m1}|{m2}", 2), 16) % 2 == 0 \
                    else (m2, m1)
                rows["id"].append(f"mtbench-q{qid}-t1-{ma}-vs-{mb}-unjudged")
                rows["prompt"].append(q_turns[qid][:1])
                rows["response_a"].append(answers[(ma, qid)][:1])
                rows["response_b"].append(answers[(mb, qid)][:1])
                rows["model_a"].append(ma)
                rows["model_b"].append(mb)
    if not rows["id"]:
        raise DataError("every pair of model answers has a human judgment", file=judg)
    df = pl.DataFrame(rows, schema_overrides={"prompt": TURNS, "response_a": TURNS,
                                              "response_b": TURNS})
    df = df.with_columns(group=_question_groups(rows["prompt"]), language=pl.lit("en"))
    return finish_table(df, source=source, file=judg, quirks=quirks)
