"""Atomic writes and file fingerprints."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_paths(*paths: str | Path) -> Iterator[list[Path]]:
    """Yield one temporary path beside each of ``paths``; when the block succeeds, rename them
    all into place, or none: a failure while renaming puts back what was there before.

    A crash or an exception inside the block leaves every target as it was (and removes the
    temporaries). Use it for outputs that belong together (a submission and its provenance).
    """
    finals = [Path(p) for p in paths]
    temps: list[Path] = []
    try:
        for final in finals:
            final.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
            os.close(fd)
            temps.append(Path(name))
        yield temps
        for tmp in temps:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        placed: list[tuple[Path, Path | None]] = []
        try:
            for tmp, final in zip(temps, finals, strict=True):
                backup = None
                if final.exists() and len(finals) > 1:
                    fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".bak",
                                                dir=final.parent)
                    os.close(fd)
                    backup = Path(name)
                    os.replace(final, backup)
                placed.append((final, backup))
                os.replace(tmp, final)
        except BaseException:
            for final, backup in reversed(placed):
                if backup is not None:
                    os.replace(backup, final)
                elif final.exists():
                    final.unlink()
            raise
        for _, backup in placed:
            if backup is not None:
                backup.unlink()
    finally:
        for tmp in temps:
            if tmp.exists():
                tmp.unlink()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only if the block succeeds.

    A crash or an exception leaves no partial file at ``path`` (and removes the temporary).
    """
    with atomic_paths(path) as (tmp,):
        yield tmp


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """A fresh folder beside ``path`` to fill; on success it replaces ``path`` (an old one is
    moved aside first, then deleted), on failure it is removed and ``path`` is untouched."""
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_json_header(folder: str | Path, name: str, kind: str, version: int,
                     what: str) -> dict[str, Any]:
    """``folder/name`` read as a JSON object whose ``kind`` and ``format`` are the given ones,
    or a one-line :class:`DataError` (not there, not JSON, another kind or format)."""
    from prefpred.errors import DataError

    folder = Path(folder)
    file = folder / name
    if not file.is_file():
        raise DataError(f"not a {what} (no {name})", file=folder)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise DataError(f"not a {what} ({err})", file=file) from None
    if not isinstance(data, dict) or data.get("kind") != kind or data.get("format") != version:
        raise DataError(f"not a {what} of format {version}", file=file)
    return data


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_back(path: str | Path, reader, what: str, check=None):
    """``reader(path)`` for a file written earlier (a finished fold, a cached stage), or None
    when there is none; a file that cannot be read or fails ``check(value)`` (which raises or
    returns False) is also None, after one line saying it will be recomputed."""
    from prefpred.errors import notice

    path = Path(path)
    if not path.exists():
        return None
    try:
        value = reader(path)
        if check is not None and check(value) is False:
            raise ValueError("its ids, shape or values do not match")
    except Exception as err:  # noqa: BLE001 - any unreadable or foreign file is recomputed
        reason = " ".join(str(err).split())[:160] or type(err).__name__
        notice(f"{what} {path} cannot be reused ({reason}); recomputing it")
        return None
    return value


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def git_commit(cwd: str | Path | None = None) -> str | None:
    """The current git commit (with ``-dirty`` when the tree has changes), or None outside git."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                              text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}-dirty" if dirty else head


#: A name that becomes part of a path (run, model label, competition, study): letters, digits
#: and ``. _ - + =``, starting with a letter or digit; never a separator or ``..``.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]{0,127}")


def safe_name(value: object, what: str) -> str:
    """``value`` if it is safe as one path component (see :data:`SAFE_NAME`), else a
    :class:`~prefpred.errors.ConfigError` naming ``what``."""
    from prefpred.errors import ConfigError

    if not isinstance(value, str) or not SAFE_NAME.fullmatch(value) or ".." in value:
        raise ConfigError(f"{what} {value!r} cannot name a file or folder: use letters, digits "
                          "and . _ - + = only (no path separators, no '..')")
    return value


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output(path: str | Path, *, inputs: Iterable[str | Path] = (), folder: bool = False,
                 what: str = "output", suffixes: Iterable[str] | None = None,
                 apart: bool = False) -> Path:
    """Refuse, before any work, an output that would replace an input (the same file, or an input
    folder), a file output that is an existing folder, or one whose folder cannot be written.

    ``folder=True``: ``path`` is a folder to write files into; ``suffixes``: the file types
    the output may have; ``apart=True`` (a folder written or replaced as a whole): it may
    neither hold an input nor lie inside an input folder. Returns ``path``.
    """
    from prefpred.errors import ConfigError

    path = Path(path)
    if suffixes is not None and not path.is_dir() and path.suffix.lower() not in set(suffixes):
        raise ConfigError(f"{what} {path}: the file must end in one of {sorted(set(suffixes))}")
    resolved = path.expanduser().resolve()
    for item in inputs:
        src = Path(item).expanduser()
        if resolved == src.resolve() or _same_file(path, src):
            raise ConfigError(f"{what} {path} is the input {src}: an output never replaces an "
                              "input; choose another path")
    if apart:
        for item in inputs:
            src = Path(item).expanduser().resolve()
            if src.is_relative_to(resolved):
                raise ConfigError(f"{what} {path} holds the input {item}: an output never "
                                  "replaces an input; choose another folder")
            if src.is_dir() and resolved.is_relative_to(src):
                raise ConfigError(f"{what} {path} is inside the input folder {item}; choose a "
                                  "folder outside it")
    if folder:
        if path.exists() and not path.is_dir():
            raise ConfigError(f"{what} {path} is a file, expected a folder")
        target = path
    else:
        if path.is_dir():
            raise ConfigError(f"{what} {path} is a folder, expected a file path")
        target = path.parent
    existing = target.expanduser().absolute()
    while True:  # the nearest folder that exists (one we may not even look into is refused)
        try:
            os.stat(existing)
            break
        except FileNotFoundError:
            existing = existing.parent
        except PermissionError:
            raise ConfigError(f"{what} {path}: the folder {existing.parent} cannot be "
                              "written") from None
    if not existing.is_dir():
        raise ConfigError(f"{what} {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {path}: the folder {existing} cannot be written")
    return path


def json_digest(obj: Any) -> str:
    """SHA-256 of a value's canonical JSON (sorted keys; other values as text): cache keys."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()
