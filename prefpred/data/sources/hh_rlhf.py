"""Anthropic hh-rlhf: ``chosen`` / ``rejected`` whole transcripts (``\\n\\nHuman: ...\\n\\nAssistant:
...``) that differ only in the last assistant turn; a two-class source (no tie option).

Representation: the prompt is the list of human turns; response A and response B are the
assistant turns of the two transcripts, one per human turn, identical except the last (the
earlier assistant turns are the shared context of the dialogue, kept so that a model sees the
conversation as it was). Consecutive turns of one speaker are joined with a blank line
(counted as a quirk). Which transcript becomes A is decided by a stable hash of the prompt and
the *unordered* pair of final turns (which of the two goes to A), so the side says nothing about
the label and swapping chosen and rejected in the file moves only the label; the label is the
side of ``chosen``, ``tie_allowed`` is False. A pair whose transcripts do not share everything
up to their last ``\\n\\nAssistant:`` (or has none) is dropped and counted, or with ``strict`` a
located :class:`DataError`.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import polars as pl

from prefpred.data.mapped import finish_table
from prefpred.data.table import TURNS, PreferenceTable, Quirks
from prefpred.data.text import json_error, repair_text, stable_digest
from prefpred.errors import DataError
from prefpred.labels import A, B

HUMAN, ASSISTANT = "\n\nHuman:", "\n\nAssistant:"
_MARKER = re.compile(r"\n\n(Human|Assistant): ?")
NO_SHARED_PREFIX = "chosen and rejected do not share the dialogue before the last assistant turn " \
                   "(pair dropped)"
NO_ASSISTANT = "transcript has no \\n\\nAssistant: turn (pair dropped)"
NOT_HUMAN_FIRST = "transcript does not start with \\n\\nHuman: (pair dropped)"
JOINED = "consecutive turns of one speaker (joined with a blank line)"


def _open_text(path: Path):
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def read_jsonl_records(path: Path) -> list[dict]:
    """JSON lines (plain or gzipped) as dicts; row N is the N-th non-blank line."""
    if not path.exists():
        raise DataError("file not found", file=path)
    records: list[dict] = []
    try:
        with _open_text(path) as fh:
            row = 0
            for line in fh:
                if not line.strip():
                    continue
                row += 1
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataError(json_error(err), file=path, row=row) from None
                if not isinstance(obj, dict):
                    raise DataError("a JSON line must be an object", file=path, row=row)
                records.append(obj)
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise DataError(f"cannot be read as (gzipped) UTF-8 JSON lines: {err}", file=path) from None
    if not records:
        raise DataError("file has no records", file=path)
    return records


def split_dialogue(text: str) -> list[tuple[str, str]] | None:
    """``"\\n\\nHuman: q\\n\\nAssistant: a..."`` as [(role, body), ...] with consecutive turns of
    one speaker joined; None when it does not start with a human turn."""
    parts = _MARKER.split(text)
    if parts[0] != "" or len(parts) < 3 or parts[1] != "Human":
        return None
    turns: list[tuple[str, str]] = []
    for role, body in zip(parts[1::2], parts[2::2], strict=True):
        if turns and turns[-1][0] == role:
            turns[-1] = (role, turns[-1][1] + "\n\n" + body)
        else:
            turns.append((role, body))
    return turns


def looks_like_hh(path: Path) -> bool:
    """Does the first record hold ``chosen`` / ``rejected`` transcripts starting with a human turn?"""
    try:
        with _open_text(path) as fh:
            first = next((ln for ln in fh if ln.strip()), "")
        obj = json.loads(first)
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(obj, dict) and isinstance(obj.get("chosen"), str) \
        and obj["chosen"].startswith(HUMAN) and "prompt" not in obj


def _problem(quirks: Quirks, strict: bool, name: str, file: Path, row: int, column: str) -> None:
    if strict:
        raise DataError(name.replace(" (pair dropped)", ""), file=file, row=row, column=column,
                        fix="drop --strict to skip such pairs")
    quirks.add(name, 1, f"row {row}")


def read_hh_rlhf(path: str | Path, *, source: str = "hh-rlhf-harmless", strict: bool = False
                 ) -> PreferenceTable:
    """hh-rlhf ``chosen`` / ``rejected`` transcripts as two-class pairs (see the module doc)."""
    path = Path(path)
    quirks = Quirks()
    records = read_jsonl_records(path)
    ids, prompts, ras, rbs, labels = [], [], [], [], []
    for row, rec in enumerate(records, 1):
        texts = {}
        for col in ("chosen", "rejected"):
            if col not in rec:
                raise DataError(f"missing key {col!r}; the record has {sorted(rec)}", file=path,
                                row=row, column=col)
            if not isinstance(rec[col], str):
                raise DataError(f"expected a transcript (text), got {type(rec[col]).__name__}",
                                file=path, row=row, column=col)
            texts[col] = repair_text(rec[col], strict=strict, file=path, row=row, column=col,
                                     quirks=quirks)
        chosen, rejected = texts["chosen"], texts["rejected"]
        cut_c, cut_r = chosen.rfind(ASSISTANT), rejected.rfind(ASSISTANT)
        if cut_c < 0 or cut_r < 0:
            _problem(quirks, strict, NO_ASSISTANT, path, row, "chosen" if cut_c < 0 else "rejected")
            continue
        prefix = chosen[:cut_c]
        if prefix != rejected[:cut_r]:
            _problem(quirks, strict, NO_SHARED_PREFIX, path, row, "rejected")
            continue
        shared = split_dialogue(prefix)
        if shared is None:
            _problem(quirks, strict, NOT_HUMAN_FIRST, path, row, "chosen")
            continue
        last = {}
        for col, text, cut in (("chosen", chosen, cut_c), ("rejected", rejected, cut_r)):
            body = text[cut + len(ASSISTANT):]
            last[col] = body[1:] if body.startswith(" ") else body
        sides = {}
        for col in ("chosen", "rejected"):
            turns = list(shared)
            if turns[-1][0] == "Assistant":  # "...Assistant: x\n\nAssistant: y": one turn
                turns[-1] = ("Assistant", turns[-1][1] + "\n\n" + last[col])
            else:
                turns.append(("Assistant", last[col]))
            sides[col] = turns
        if shared[-1][0] == "Assistant" or len(_MARKER.findall(prefix)) != len(shared):
            quirks.add(JOINED, 1, f"row {row}")
        users = [body for role, body in sides["chosen"] if role == "Human"]
        pair = sorted((last["chosen"], last["rejected"]))
        first_is_a = int(stable_digest("\x00".join([prefix, *pair]), 2), 16) % 2 == 0
        chosen_is_a = (last["chosen"] == pair[0]) == first_is_a
        a_side, b_side = (("chosen", "rejected") if chosen_is_a else ("rejected", "chosen"))
        ids.append(f"{source}-{row}")
        prompts.append(users)
        ras.append([body for role, body in sides[a_side] if role == "Assistant"])
        rbs.append([body for role, body in sides[b_side] if role == "Assistant"])
        labels.append(A if chosen_is_a else B)
    if not ids:
        raise DataError("no usable chosen/rejected pair", file=path)
    df = pl.DataFrame({
        "id": pl.Series(ids, dtype=pl.String),
        "prompt": pl.Series(prompts, dtype=TURNS),
        "response_a": pl.Series(ras, dtype=TURNS),
        "response_b": pl.Series(rbs, dtype=TURNS),
        "label": pl.Series(labels, dtype=pl.Int8),
        "language": pl.Series(["en"] * len(ids), dtype=pl.String),
        "tie_allowed": pl.Series([False] * len(ids), dtype=pl.Boolean),
    })
    return finish_table(df, source=source, file=path, quirks=quirks)
