"""Loading Hugging Face configs, tokenizers and models: offline, local files only, no code.

Every ``from_pretrained`` in prefpred goes through :func:`from_pretrained`, which

- passes ``local_files_only=True`` (and :mod:`prefpred` sets ``HF_HUB_OFFLINE=1`` for the
  process when it is imported), so nothing is ever downloaded;
- passes ``trust_remote_code=False`` unless the user asked for remote code on the command line
  for this run (``prefpred --trust-remote-code ...``, see :func:`remote_code_allowed`): a folder
  whose ``config.json`` maps to Python files inside it (``auto_map``) is refused, and nothing
  a file can say (an artifact's ``prefpred_config.json``, a run or competition TOML, a backbone
  config, a params file) turns it on;
- checks the folder first: a missing ``config.json``, tokenizer or weights file is a one-line
  error naming what is missing.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prefpred.errors import ConfigError, DependencyError

_remote_code = False

#: What a model folder needs, by part: any one of the names (or patterns) listed.
_PARTS = {
    "config": ("config.json",),
    "tokenizer": ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.txt",
                  "vocab.json", "spiece.model"),
    "weights": ("*.safetensors", "pytorch_model*.bin", "model.safetensors.index.json",
                "*.gguf"),
}


def enforce_offline() -> None:
    """No network for the Hugging Face libraries in this process (read at their import)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"


@contextlib.contextmanager
def remote_code_allowed(allowed: bool = True) -> Iterator[None]:
    """Within the block, model folders may run the Python code they ship (the CLI's
    ``--trust-remote-code``, for one run). Nothing read from a file can enter this block."""
    global _remote_code
    before, _remote_code = _remote_code, bool(allowed)
    try:
        yield
    finally:
        _remote_code = before


def allow_remote_code() -> None:
    """Turn remote code on until the enclosing :func:`remote_code_allowed` block ends (the
    CLI's ``--trust-remote-code``: ``main`` runs every command inside such a block)."""
    global _remote_code
    _remote_code = True


def check_model_folder(path: str | Path, parts: tuple[str, ...] = ("config", "tokenizer",
                                                                    "weights"),
                       *, gguf_file: str | None = None, what: str = "model") -> Path:
    """``path`` as a model folder holding every part in ``parts``; else a one-line error naming
    the folder and what is missing (a GGUF file holds config, tokenizer and weights)."""
    path = Path(path)
    if not path.is_dir():
        raise DependencyError(f"{path}: the {what} folder does not exist (models are never "
                              "downloaded; pass a local folder)")
    if gguf_file is not None:
        if not (path / gguf_file).is_file():
            raise DependencyError(f"{path}: the {what} folder has no {gguf_file}")
        return path
    missing = [part for part in parts
               if not any(any(path.glob(name)) for name in _PARTS[part])]
    if missing:
        wanted = "; ".join(f"{part} ({' or '.join(_PARTS[part][:3])})" for part in missing)
        raise DependencyError(f"{path}: the {what} folder has no {wanted}")
    return path


def _uses_remote_code(path: Path) -> bool:
    import json

    for name in ("config.json", "tokenizer_config.json"):
        file = path / name
        if file.is_file():
            try:
                data = json.loads(file.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and data.get("auto_map"):
                return True
    return False


def from_pretrained(factory: Any, path: str | Path, *, what: str = "model",
                    **kwargs: Any) -> Any:
    """``factory.from_pretrained(path, ...)`` offline, from local files, without remote code
    unless :func:`remote_code_allowed`; errors are one line naming the folder."""
    path = Path(path)
    for key in ("trust_remote_code", "local_files_only", "revision", "token", "cache_dir",
                "force_download", "proxies"):
        if key in kwargs:
            raise ConfigError(f"{key} cannot be set for {path}")
    if _uses_remote_code(path) and not _remote_code:
        raise ConfigError(f"{path}: the {what} ships Python code (auto_map) that prefpred does "
                          "not run; pass --trust-remote-code to this command to allow it")
    try:
        return factory.from_pretrained(path, local_files_only=True,
                                       trust_remote_code=_remote_code, **kwargs)
    except (OSError, ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"{path}: cannot load the {what} ({first})") from None
