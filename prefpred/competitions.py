"""Competition definitions (``competitions/*.toml``) and where data lives."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from prefpred.data.formats import FORMATS, load_table
from prefpred.data.table import PreferenceTable
from prefpred.data.votes import check_mode, rebuild_labels
from prefpred.errors import ConfigError, DataError
from prefpred.io import SAFE_NAME, safe_name
from prefpred.labels import CLASSES
from prefpred.schema import Schema, closest, read_toml, validate

#: The project root when running from a checkout (holds ``competitions/``).
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def competitions_dir() -> Path:
    env = os.environ.get("PREFPRED_COMPETITIONS")
    if env:
        return Path(env)
    local = Path.cwd() / "competitions"
    return local if local.is_dir() else PROJECT_ROOT / "competitions"


def data_root() -> Path:
    """Where relative data paths in competition files point: ``$PREFPRED_DATA_ROOT``, else the
    ``shared/data`` folder beside the project root (``../shared/data``)."""
    env = os.environ.get("PREFPRED_DATA_ROOT")
    return Path(env) if env else (PROJECT_ROOT.parent / "shared" / "data")


@dataclass(frozen=True)
class DataSource:
    path: str
    format: str
    source: str | None = None
    columns: dict[str, Any] | None = None
    #: how labels are rebuilt from the rows' votes (prefpred.data.votes); None: as read
    labels: str | None = None

    def resolve(self) -> Path:
        p = Path(self.path).expanduser()
        return p if p.is_absolute() else data_root() / p

    def load(self, strict: bool = False) -> PreferenceTable:
        table = load_table(self.resolve(), self.format, source=self.source, strict=strict,
                           columns=self.columns)
        return table if self.labels is None else rebuild_labels(table, self.labels)


@dataclass(frozen=True)
class SubmissionLayout:
    """``probabilities``: id + one probability column per class (in ``columns[1:]`` order).
    ``label``: id + one column holding a class name from ``values``."""

    kind: str
    columns: tuple[str, ...]
    values: dict[str, str] = field(default_factory=dict)  # class -> written value (label layout)

    @property
    def id_column(self) -> str:
        return self.columns[0]


@dataclass(frozen=True)
class Competition:
    name: str
    description: str
    metric: str
    classes: tuple[str, ...]
    train: tuple[DataSource, ...]
    test_format: str
    submission: SubmissionLayout
    n_folds: int = 5
    seed: int = 42
    file: Path | None = None

    def load_train(self, paths: list[str | Path] | None = None, fmt: str | None = None,
                   strict: bool = False) -> PreferenceTable:
        """The training table: the TOML's sources, or ``paths`` (each read with ``fmt`` or its
        auto-detected format)."""
        if paths:
            tables = [load_table(p, fmt, strict=strict) for p in paths]
        else:
            if not self.train:
                raise ConfigError(f"competition {self.name!r} lists no training data; pass --data")
            tables = [src.load(strict=strict) for src in self.train]
        return tables[0] if len(tables) == 1 else PreferenceTable.concat(tables)

    def load_test(self, path: str | Path, fmt: str | None = None, strict: bool = False
                  ) -> PreferenceTable:
        return load_table(path, fmt or self.test_format, strict=strict)


class _Source(Schema):
    path: str
    format: str
    source: str | None = None
    columns: dict[str, Any] | None = None
    labels: str | None = None


class _Submission(Schema):
    layout: Literal["probabilities", "label"] = "probabilities"
    columns: list[str]
    values: dict[str, str] = {}


class _Test(Schema):
    format: str | None = None


class _CV(Schema):
    folds: Annotated[int, Field(ge=2)] = 5
    seed: Annotated[int, Field(ge=0)] = 42


class CompetitionFile(Schema):
    """A competition TOML (see ``competitions/lmsys-chatbot-arena.toml``)."""

    name: str
    description: str = ""
    metric: Literal["log_loss", "accuracy"] = "log_loss"
    classes: list[str] = list(CLASSES)
    train: list[_Source] = []
    test: _Test = _Test()
    submission: _Submission
    cv: _CV = _CV()


def parse_competition(data: dict[str, Any], file: Path) -> Competition:
    """A checked :class:`Competition` from a TOML table (errors name the file and the key)."""
    spec = validate(CompetitionFile, data, file)
    name = safe_name(spec.name, f"{file}: name")
    classes = tuple(spec.classes)
    if not set(classes) <= set(CLASSES) or len(set(classes)) != len(classes) or not classes:
        raise ConfigError(f"{file}: classes {list(classes)} must be distinct, drawn from "
                          f"{list(CLASSES)}")
    train = []
    for i, src in enumerate(spec.train, 1):
        if src.format not in FORMATS:
            raise ConfigError(f"{file}: [[train]] #{i} format {src.format!r} unknown"
                              f"{closest(src.format, FORMATS)}; known {sorted(FORMATS)}")
        if src.columns is not None:
            fmt = FORMATS[src.format]
            if not fmt.takes_columns:
                raise ConfigError(f"{file}: [[train]] #{i}: format {src.format!r} takes no "
                                  "columns table")
            fmt.column_map.with_overrides(src.columns, f"{file}: [[train]] #{i} columns")
        if src.labels is not None:
            check_mode(src.labels, f"{file}: [[train]] #{i} labels")
        train.append(DataSource(src.path, src.format, src.source, src.columns, src.labels))
    sub = spec.submission
    columns = tuple(sub.columns)
    if sub.layout == "probabilities" and len(columns) != 1 + len(classes):
        raise ConfigError(f"{file}: a probabilities submission needs id + {len(classes)} columns")
    if sub.layout == "label" and len(columns) != 2:
        raise ConfigError(f"{file}: a label submission needs exactly id + one label column")
    if len(set(columns)) != len(columns):
        raise ConfigError(f"{file}: [submission] columns {list(columns)} repeat a name")
    bad_values = [k for k in sub.values if k not in classes]
    if bad_values:
        raise ConfigError(f"{file}: [submission] values: {bad_values[0]!r} is not one of the "
                          f"classes {list(classes)}")
    test_format = spec.test.format or (train[0].format if train else "kaggle-lmsys")
    if test_format not in FORMATS:
        raise ConfigError(f"{file}: [test] format {test_format!r} unknown"
                          f"{closest(test_format, FORMATS)}; known {sorted(FORMATS)}")
    return Competition(
        name=name,
        description=spec.description,
        metric=spec.metric,
        classes=classes,
        train=tuple(train),
        test_format=test_format,
        submission=SubmissionLayout(sub.layout, columns, dict(sub.values)),
        n_folds=spec.cv.folds,
        seed=spec.cv.seed,
        file=file,
    )


def load_competition(name_or_path: str | Path) -> Competition:
    """A competition by name (``competitions/<name>.toml``) or by TOML path."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        known = list_competitions()
        if not SAFE_NAME.fullmatch(str(name_or_path)) or str(name_or_path) not in known:
            raise ConfigError(f"unknown competition {str(name_or_path)!r}"
                              f"{closest(str(name_or_path), known)}; known: {known}")
        path = competitions_dir() / f"{name_or_path}.toml"
    return parse_competition(read_toml(path, "competition file"), path)


def list_competitions() -> list[str]:
    return sorted(p.stem for p in competitions_dir().glob("*.toml"))


__all__ = ["Competition", "DataError", "DataSource", "SubmissionLayout", "load_competition"]
