"""Errors a user can cause. The CLI prints ``str(err)`` as one line and exits non-zero."""

from __future__ import annotations

from pathlib import Path


class PrefpredError(Exception):
    """Base class for every error caused by user input or configuration."""

    exit_code = 2

    def __str__(self) -> str:  # one line, always
        return " ".join(super().__str__().split())


def where(file: str | Path | None = None, row: int | None = None, column: str | None = None) -> str:
    """Format a location as ``file: row N, column 'c'`` (parts that are unknown are left out)."""
    parts = []
    if row is not None:
        parts.append(f"row {row}")
    if column is not None:
        parts.append(f"column '{column}'")
    loc = ", ".join(parts)
    if file is not None:
        return f"{file}: {loc}" if loc else str(file)
    return loc


class DataError(PrefpredError):
    """A data file is malformed. ``row`` is 1-based over data rows (header excluded)."""

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        row: int | None = None,
        column: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.file, self.row, self.column, self.fix = file, row, column, fix
        loc = where(file, row, column)
        text = f"{loc}: {message}" if loc else message
        if fix:
            text = f"{text} ({fix})"
        super().__init__(text)


class SubmissionError(DataError):
    """A submission file breaks a rule that the competition grader enforces."""


class ConfigError(PrefpredError):
    """A configuration file or command-line option is wrong."""


class ModelError(PrefpredError):
    """A model produced something unusable (non-finite or wrongly shaped logits)."""


class DependencyError(PrefpredError):
    """An optional dependency or local model needed for this feature is missing."""


_noticed: set[str] = set()


def notice(message: str) -> None:
    """One line on stderr about something prefpred handled on its own (a cached file it could
    not use and recomputes, a fit it regularised): never a warning object or a traceback. The
    same line is printed once per process (a fit repeated in every fold says it once)."""
    import sys

    line = f"prefpred: {' '.join(message.split())}"
    if line not in _noticed:
        _noticed.add(line)
        print(line, file=sys.stderr)
