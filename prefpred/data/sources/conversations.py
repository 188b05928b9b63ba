"""Arena conversation sets (``conversation_a`` / ``conversation_b`` message lists, a ``winner``)
and TRL preference data (``chosen`` / ``rejected``, text or message lists)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from prefpred.data.mapped import finish_table, labels_from_column, read_ids, require_columns
from prefpred.data.raw import read_records
from prefpred.data.table import TURNS, PreferenceTable, Quirks
from prefpred.data.text import json_error, stable_digest
from prefpred.data.turns import decode_turns
from prefpred.errors import DataError
from prefpred.labels import LABEL_WORDS, TIE, A, B

#: Arena winner words: the usual vocabulary; both-bad votes count as ties.
_ARENA_WINNER = {**LABEL_WORDS, "tie (bothbad)": TIE, "both_bad": TIE, "bothbad": TIE}


def _message_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # newer arena sets: [{"type": "text", "text": ...}, ...]
        return "".join(_message_text(part.get("text") if isinstance(part, dict) else part)
                       for part in content)
    if isinstance(content, dict):
        return _message_text(content.get("text", ""))
    return str(content)


def _split_conversation(conv: Any, file: Path, row: int, column: str) -> tuple[list[str], list[str]]:
    if isinstance(conv, str):
        try:
            conv = json.loads(conv)
        except json.JSONDecodeError as err:
            raise DataError(json_error(err), file=file, row=row, column=column) from None
    if not isinstance(conv, list) or not conv:
        raise DataError("expected a list of {role, content} messages", file=file, row=row,
                        column=column)
    users, assistants = [], []
    for msg in conv:
        if not isinstance(msg, dict) or "role" not in msg:
            raise DataError("a message has no role", file=file, row=row, column=column)
        text = _message_text(msg.get("content"))
        role = str(msg["role"]).lower()
        if role in ("user", "human"):
            users.append(text)
        elif role in ("assistant", "gpt", "model", "bot"):
            assistants.append(text)
        elif role != "system":
            raise DataError(f"unknown role {msg['role']!r}", file=file, row=row, column=column)
    if not users:
        raise DataError("conversation has no user turn", file=file, row=row, column=column)
    return users, assistants or [""]


def read_arena_conversations(path: str | Path, *, source: str = "arena", strict: bool = False) -> PreferenceTable:
    """Arena sets with ``conversation_a`` / ``conversation_b`` message lists and a ``winner``
    of model_a / model_b / tie / both_bad (``tie (bothbad)`` in chatbot_arena_conversations).
    Both-bad votes count as ties (a quirk the inspector reports)."""
    path = Path(path)
    quirks = Quirks()
    raw = read_records(path, quirks=quirks, strict=strict)
    require_columns(raw, ["conversation_a", "conversation_b"], path)
    id_col = "id" if "id" in raw.columns else ("question_id" if "question_id" in raw.columns else None)
    ids = read_ids(raw, id_col, path, f"{source}-")
    if id_col == "question_id" and ids.is_duplicated().any():  # one question, several battles
        ids = ids + "-" + pl.Series([str(i) for i in range(1, raw.height + 1)])
    prompts, ras, rbs = [], [], []
    for i, (ca, cb) in enumerate(zip(raw["conversation_a"].to_list(), raw["conversation_b"].to_list(),
                                     strict=True), 1):
        ua, aa = _split_conversation(ca, path, i, "conversation_a")
        _ub, ab = _split_conversation(cb, path, i, "conversation_b")
        prompts.append(ua)
        ras.append(aa)
        rbs.append(ab)
    cols: dict[str, Any] = {"id": ids}
    for name, values in (("prompt", prompts), ("response_a", ras), ("response_b", rbs)):
        cols[name] = decode_turns(pl.Series(name, values, dtype=TURNS), column=name, encoding="json",
                                  file=path, quirks=quirks, strict=strict)
    if "winner" in raw.columns:
        winner = raw["winner"].cast(pl.String)
        both_bad = winner.str.to_lowercase().str.contains("bad").fill_null(False)
        quirks.add("both-bad votes counted as ties", int(both_bad.sum()))
        cols["label"] = labels_from_column(winner, _ARENA_WINNER, path, "winner")
    for name in ("model_a", "model_b", "language"):
        if name in raw.columns:
            cols[name] = raw[name].cast(pl.String)
    return finish_table(pl.DataFrame(cols), source=source, file=path, quirks=quirks)


# --------------------------------------------------------------------------- TRL chosen/rejected
def _as_messages(value: Any) -> list | None:
    """A message list, from a list or a JSON-encoded list of {role, content}; else None."""
    if isinstance(value, str) and value.lstrip().startswith("[{"):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
        return value
    return None


def read_trl_pairs(path: str | Path, *, source: str = "trl", strict: bool = False) -> PreferenceTable:
    """TRL preference data: ``chosen`` / ``rejected`` (text or message lists), with an optional
    ``prompt`` (text or messages). Without a prompt, the user turns of ``chosen`` are the prompt.

    Which of the pair becomes response A is decided by a stable hash of the row id, so labels are
    balanced between A and B (never all A) and the same file always gives the same table.
    """
    path = Path(path)
    quirks = Quirks()
    raw = read_records(path, quirks=quirks, strict=strict)
    require_columns(raw, ["chosen", "rejected"], path)
    ids = read_ids(raw, "id" if "id" in raw.columns else None, path, f"{source}-")
    has_prompt = "prompt" in raw.columns
    prompt_vals = raw["prompt"].to_list() if has_prompt else [None] * raw.height
    prompts, ras, rbs, labels = [], [], [], []
    for i, (rid, p, ch, rj) in enumerate(zip(ids.to_list(), prompt_vals, raw["chosen"].to_list(),
                                             raw["rejected"].to_list(), strict=True), 1):
        if p is None and has_prompt:
            raise DataError("prompt is missing", file=path, row=i, column="prompt")
        if ch is None or rj is None:
            col = "chosen" if ch is None else "rejected"
            raise DataError("text is missing", file=path, row=i, column=col)
        ch_msgs, rj_msgs = _as_messages(ch), _as_messages(rj)
        if ch_msgs is not None and rj_msgs is not None:
            users, chosen = _split_conversation(ch_msgs, path, i, "chosen")
            _u, rejected = _split_conversation(rj_msgs, path, i, "rejected")
        else:
            users, chosen, rejected = [], [str(ch)], [str(rj)]
        if has_prompt:
            p_msgs = _as_messages(p)
            users = _split_conversation(p_msgs, path, i, "prompt")[0] if p_msgs else [str(p)]
        if not users:
            raise DataError("no prompt: add a prompt column or use message lists", file=path,
                            row=i, column="prompt")
        chosen_is_a = int(stable_digest(rid, 2), 16) % 2 == 0
        prompts.append(users)
        ras.append(chosen if chosen_is_a else rejected)
        rbs.append(rejected if chosen_is_a else chosen)
        labels.append(A if chosen_is_a else B)
    df = pl.DataFrame({
        "id": ids,
        "prompt": pl.Series(prompts, dtype=TURNS),
        "response_a": pl.Series(ras, dtype=TURNS),
        "response_b": pl.Series(rbs, dtype=TURNS),
        "label": pl.Series(labels, dtype=pl.Int8),
    })
    return finish_table(df, source=source, file=path, quirks=quirks)
