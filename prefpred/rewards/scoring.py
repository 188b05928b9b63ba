"""Score both responses of every pair with a Hugging Face reward model.

A reward model here is any sequence classifier with one output (``num_labels=1``), e.g.
Skywork-Reward or an ArmoRM-style head, saved with ``save_pretrained``. Each side of a pair is
rendered as a conversation (prompt turns as ``user``, response turns as ``assistant``) with the
tokenizer's chat template, truncated from the left (the end of the response is kept), batched by
length, and scored. The output feeds ``prefpred calibrate-rewards fit`` directly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from prefpred.data.table import PreferenceTable
from prefpred.errors import ConfigError, DataError
from prefpred.labels import CLASSES


def conversation(prompt: list[str], response: list[str]) -> list[dict[str, str]]:
    """Alternate user / assistant messages: prompt turn i, then response turn i."""
    messages = []
    for i in range(max(len(prompt), len(response))):
        if i < len(prompt):
            messages.append({"role": "user", "content": prompt[i] or ""})
        if i < len(response):
            messages.append({"role": "assistant", "content": response[i] or ""})
    return messages


#: The plain rendering below as a chat template: ``prefpred train-reward`` gives it to a
#: tokenizer that has none (an encoder's), so the saved reward model renders the same text
#: through ``apply_chat_template`` with plain transformers.
PLAIN_CHAT_TEMPLATE = ("{% for m in messages %}{% if not loop.first %}{{ '\\n\\n' }}{% endif %}"
                       "{{ m['role'] | capitalize }}: {{ m['content'] }}{% endfor %}")


def render_conversation(tokenizer, messages: list[dict[str, str]]) -> str:
    """The tokenizer's chat template, or plain ``User:`` / ``Assistant:`` blocks without one."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False)
    return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)


def side_texts(tokenizer, table: PreferenceTable, column: str) -> list[str]:
    """The rendered conversation (prompt, ``column``'s response) of every pair: what a reward
    model scores, in scoring and in ``prefpred train-reward`` alike."""
    prompts = table.column("prompt").to_list()
    return [render_conversation(tokenizer, conversation(p, r))
            for p, r in zip(prompts, table.column(column).to_list(), strict=True)]


def encode_for_reward(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    """Token ids of rendered texts as a reward model sees them: no special tokens added (a chat
    template brings its own), truncated from the left (the end of the response is kept)."""
    before = tokenizer.truncation_side
    tokenizer.truncation_side = "left"
    try:
        return tokenizer(texts, add_special_tokens=False, truncation=True,
                         max_length=max_length)["input_ids"]
    finally:
        tokenizer.truncation_side = before


def length_limit(tokenizer, model, max_length: int | None, model_path: str | Path | None = None
                 ) -> int:
    """Tokens per text: ``max_length``, else the length a ``prefpred train-reward`` model was
    trained with (its prefpred_reward.json, checked), else 2048 or the tokenizer's limit; never
    beyond the model's positions."""
    caps = [getattr(model.config, "max_position_embeddings", None)]
    if max_length is None:
        caps.append(getattr(tokenizer, "model_max_length", None))
        if model_path is not None:
            from prefpred.rewards.train import REWARD_INFO, read_reward_info

            if (Path(model_path) / REWARD_INFO).is_file():
                trained = read_reward_info(model_path).get("max_length")
                if not isinstance(trained, int) or isinstance(trained, bool) or trained < 8:
                    raise DataError(f"max_length {trained!r} is not a whole number >= 8",
                                    file=Path(model_path) / REWARD_INFO, column="max_length")
                max_length = trained
    limit = max_length or 2048
    for cap in caps:
        if isinstance(cap, int) and 8 <= cap < 1_000_000:
            limit = min(limit, cap)
    return limit


def load_reward_model(path: str | Path, *, device: str | None = None, dtype: str = "auto"):
    """(tokenizer, model, device) for a local sequence classifier with one output."""
    from prefpred.hf import check_model_folder, from_pretrained

    path = check_model_folder(path, what="reward model")
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch_dtype = {"auto": torch.bfloat16 if device == "cuda" else torch.float32,
                   "float32": torch.float32, "bfloat16": torch.bfloat16,
                   "float16": torch.float16}.get(dtype)
    if torch_dtype is None:
        raise ConfigError(f"unknown dtype {dtype!r}; choose auto, float32, bfloat16 or float16")
    config = from_pretrained(AutoConfig, path, what="reward model config")
    if config.num_labels != 1:
        raise ConfigError(f"{path}: a reward model has one output, this classifier has "
                          f"{config.num_labels} (num_labels)")
    tokenizer = from_pretrained(AutoTokenizer, path, what="tokenizer")
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model = from_pretrained(AutoModelForSequenceClassification, path,
                                what="reward model", dtype=torch_dtype)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    tokenizer.truncation_side = "left"
    model.to(device).eval()
    return tokenizer, model, device


def score_texts(tokenizer, model, texts: list[str], *, device: str = "cpu", batch_size: int = 8,
                max_length: int = 2048, progress: bool = True) -> np.ndarray:
    """One reward per text. Texts are sorted by length so each batch pads little."""
    import torch
    from rich.progress import Progress

    ids = encode_for_reward(tokenizer, texts, max_length)
    order = np.argsort([len(x) for x in ids], kind="stable")[::-1]
    out = np.empty(len(texts))
    with Progress(disable=not progress, transient=True) as bar, torch.inference_mode():
        task = bar.add_task("scoring", total=len(texts))
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            batch = tokenizer.pad({"input_ids": [ids[i] for i in idx]}, return_tensors="pt")
            batch = {k: v.to(device) for k, v in batch.items()}
            logits = model(**batch).logits
            out[idx] = logits[:, 0].float().cpu().numpy()
            bar.advance(task, len(idx))
    return out


def score_pairs(model_path: str | Path, table: PreferenceTable, *, batch_size: int = 8,
                max_length: int | None = 2048, device: str | None = None, dtype: str = "auto",
                progress: bool = True) -> pl.DataFrame:
    """id, reward_a, reward_b, source, group (and label as A/B/TIE when the table has labels).

    ``max_length=None``: see :func:`length_limit`."""
    tokenizer, model, device = load_reward_model(model_path, device=device, dtype=dtype)
    max_length = length_limit(tokenizer, model, max_length, model_path)
    texts = side_texts(tokenizer, table, "response_a") + side_texts(tokenizer, table, "response_b")
    rewards = score_texts(tokenizer, model, texts, device=device, batch_size=batch_size,
                          max_length=max_length, progress=progress)
    n = len(table)
    frame = pl.DataFrame({"id": table.ids, "reward_a": rewards[:n], "reward_b": rewards[n:],
                          "source": table.column("source"), "group": table.column("group")})
    if table.n_labelled == n:
        frame = frame.with_columns(
            pl.Series("label", [CLASSES[i] for i in table.labels()], dtype=pl.String))
    return frame
