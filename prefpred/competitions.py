"""Competition definitions (``competitions/*.toml``) and where data lives."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefpred.data.formats import FORMATS, load_table
from prefpred.data.table import PreferenceTable
from prefpred.errors import ConfigError, DataError
from prefpred.labels import CLASSES

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

    def resolve(self) -> Path:
        p = Path(self.path).expanduser()
        return p if p.is_absolute() else data_root() / p

    def load(self, strict: bool = False) -> PreferenceTable:
        return load_table(self.resolve(), self.format, source=self.source, strict=strict,
                          columns=self.columns)


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


def _require(data: dict, key: str, file: Path) -> Any:
    if key not in data:
        raise ConfigError(f"{file}: missing key '{key}'")
    return data[key]


def parse_competition(data: dict[str, Any], file: Path) -> Competition:
    metric = data.get("metric", "log_loss")
    if metric not in ("log_loss", "accuracy"):
        raise ConfigError(f"{file}: metric {metric!r} is not log_loss or accuracy")
    classes = tuple(data.get("classes", CLASSES))
    if not set(classes) <= set(CLASSES):
        raise ConfigError(f"{file}: classes {classes} must be drawn from {CLASSES}")
    train = []
    for i, src in enumerate(data.get("train", []), 1):
        fmt = _require(src, "format", file)
        if fmt not in FORMATS:
            raise ConfigError(f"{file}: train #{i} format {fmt!r} unknown; known {sorted(FORMATS)}")
        train.append(DataSource(_require(src, "path", file), fmt, src.get("source"),
                                src.get("columns")))
    sub = _require(data, "submission", file)
    kind = sub.get("layout", "probabilities")
    columns = tuple(_require(sub, "columns", file))
    if kind == "probabilities" and len(columns) != 1 + len(classes):
        raise ConfigError(f"{file}: a probabilities submission needs id + {len(classes)} columns")
    if kind == "label" and len(columns) != 2:
        raise ConfigError(f"{file}: a label submission needs exactly id + one label column")
    if kind not in ("probabilities", "label"):
        raise ConfigError(f"{file}: submission layout {kind!r} is not probabilities or label")
    cv = data.get("cv", {})
    test_format = data.get("test", {}).get("format") or (train[0].format if train else "kaggle-lmsys")
    return Competition(
        name=_require(data, "name", file),
        description=data.get("description", ""),
        metric=metric,
        classes=classes,
        train=tuple(train),
        test_format=test_format,
        submission=SubmissionLayout(kind, columns, dict(sub.get("values", {}))),
        n_folds=int(cv.get("folds", 5)),
        seed=int(cv.get("seed", 42)),
        file=file,
    )


def load_competition(name_or_path: str | Path) -> Competition:
    """A competition by name (``competitions/<name>.toml``) or by TOML path."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = competitions_dir() / f"{name_or_path}.toml"
    if not path.exists():
        known = sorted(p.stem for p in competitions_dir().glob("*.toml"))
        raise ConfigError(f"unknown competition {str(name_or_path)!r}; known: {known}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: invalid TOML ({err})") from None
    return parse_competition(data, path)


def list_competitions() -> list[str]:
    return sorted(p.stem for p in competitions_dir().glob("*.toml"))


__all__ = ["Competition", "DataError", "DataSource", "SubmissionLayout", "load_competition"]
