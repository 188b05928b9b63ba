"""Auto-J pairwise test data and the LLMEval² benchmark: column-mapped files with their own
label words; LLMEval²'s MT-Bench rows carry whole transcripts as responses."""

from __future__ import annotations

import re

import numpy as np
import polars as pl

from prefpred.data.mapped import ColumnMap
from prefpred.data.table import TURNS, Quirks
from prefpred.data.turns import count_empty
from prefpred.labels import LABEL_WORDS, TIE, A, B

AUTOJ = ColumnMap(id=None, response_a="response 1", response_b="response 2", turns="text",
                  label="label", label_map={"0": A, "1": B, "2": TIE})
LLMEVAL2 = ColumnMap(
    id=None, prompt="query", response_a="response1", response_b="response2", turns="text",
    label="human", label_map={**LABEL_WORDS, "model1": A, "model2": B},
    language_from="dataset",
    language_map={"rlhf-reward-chinese": "zh", "rlhf-reward-russian": "ru",
                  "reward-aira-portuguese": "pt"},
    language_default="en",
)


_ROLE_SPLIT = re.compile(r"(?:^|\n\n)(user|assistant): ", re.IGNORECASE)


def split_transcript(text: str) -> tuple[list[str], list[str]] | None:
    """Split ``"user: ...\\n\\nassistant: ..."`` into (user turns, assistant turns), or None."""
    if not text.lower().startswith("user: "):
        return None
    parts = _ROLE_SPLIT.split(text)
    # parts: ["", role, body, role, body, ...]
    if parts[0] != "" or len(parts) < 3:
        return None
    users, assistants = [], []
    expected = "user"
    for role, body in zip(parts[1::2], parts[2::2], strict=True):
        role = role.lower()
        if role != expected:
            return None
        (users if role == "user" else assistants).append(body)
        expected = "assistant" if role == "user" else "user"
    if len(assistants) < len(users) - 1 or not assistants:
        return None
    return users, assistants


def llmeval2_transcripts(df: pl.DataFrame, quirks: Quirks) -> pl.DataFrame:
    """LLMEval² MT-Bench rows have an empty query and whole transcripts as responses.

    Where both responses are transcripts with the same user turns, the user turns become the
    prompt and the assistant turns the responses.
    """
    empty = count_empty(df["prompt"])
    if not empty.any():
        return df
    prompts, ras, rbs = df["prompt"].to_list(), df["response_a"].to_list(), df["response_b"].to_list()
    fixed = 0
    for i in np.flatnonzero(empty.to_numpy()):
        a = split_transcript(ras[i][0])
        b = split_transcript(rbs[i][0])
        if a and b and a[0] == b[0]:
            prompts[i], ras[i], rbs[i] = a[0], a[1], b[1]
            fixed += 1
    quirks.add("empty query, prompt recovered from user/assistant transcripts", fixed)
    return df.with_columns(
        pl.Series("prompt", prompts, dtype=TURNS),
        pl.Series("response_a", ras, dtype=TURNS),
        pl.Series("response_b", rbs, dtype=TURNS),
    )
