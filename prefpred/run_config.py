"""The configuration of ``prefpred run``: a TOML file read into a checked :class:`RunConfig`
(see ``configs/demo.toml`` for every key)."""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prefpred.errors import ConfigError

STACK_METHODS = ("auto", "none", "blend", "logistic", "lgbm")
CALIBRATION_METHODS = ("auto", "none", "temperature", "vector", "temperature_by_length")


@dataclass(frozen=True)
class ModelSpec:
    """One base model: a registered model name, a label (unique in the run) and parameters."""

    name: str
    label: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HoldoutSpec:
    source: str | None = None
    fraction: float = 0.2
    seed: int = 0


@dataclass(frozen=True)
class RunConfig:
    name: str
    competition: str
    submission_competition: str
    out_dir: Path
    models: tuple[ModelSpec, ...]
    train: tuple[str, ...] = ()
    test: str | None = None
    holdout: HoldoutSpec | None = None
    folds: int | None = None
    seed: int | None = None
    stack: str = "auto"
    stack_candidates: tuple[str, ...] = ("blend", "logistic", "lgbm")
    stack_features: str = "length"
    calibration: str = "auto"
    calibration_candidates: tuple[str, ...] = ("temperature", "vector", "temperature_by_length")
    submission: Path | None = None
    report: Path | None = None
    file: Path | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        return json.loads(json.dumps(data, default=str))


def _as_tuple(value: Any, key: str, file: Path) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(f"{file}: '{key}' must be a string or a list of strings")


def read_run_config(path: str | Path) -> RunConfig:
    """Parse and check a run TOML (see ``configs/demo.toml`` for every key)."""
    from prefpred.models.base import model_names
    from prefpred.params import model_params

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: run configuration not found")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: invalid TOML ({err})") from None
    known = {"run", "data", "models", "stack", "calibration", "output"}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {sorted(unknown)}; known {sorted(known)}")
    run = data.get("run", {})
    if "competition" not in run:
        raise ConfigError(f"{path}: [run] needs 'competition'")
    name = run.get("name", path.stem)
    out_dir = Path(run.get("out_dir", f"runs/{name}"))
    models = []
    for i, spec in enumerate(data.get("models", []), 1):
        if "name" not in spec:
            raise ConfigError(f"{path}: [[models]] #{i} needs 'name'")
        if spec["name"] not in model_names():
            raise ConfigError(f"{path}: [[models]] #{i}: unknown model {spec['name']!r}; "
                              f"choose one of {model_names()}")
        unknown_keys = set(spec) - {"name", "label", "params", "params_file", "config",
                                    "backbone"}
        if unknown_keys:
            raise ConfigError(f"{path}: [[models]] #{i}: unknown key(s) {sorted(unknown_keys)}")
        model_name = spec["name"]
        params = model_params(model_name, params_file=spec.get("params_file"),
                              values=spec.get("params", {}), backbone=spec.get("backbone"),
                              config=spec.get("config"))
        models.append(ModelSpec(model_name, spec.get("label", model_name), params))
    if not models:
        raise ConfigError(f"{path}: at least one [[models]] entry is needed")
    labels = [m.label for m in models]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{path}: model labels must be unique, got {labels}")
    d = data.get("data", {})
    holdout = None
    if "holdout" in d:
        h = d["holdout"]
        holdout = HoldoutSpec(h.get("source"), float(h.get("fraction", 0.2)), int(h.get("seed", 0)))
    if holdout is None and "test" not in d:
        raise ConfigError(f"{path}: [data] needs 'test' (a test file) or a [data.holdout] table")
    if holdout is not None and "test" in d:
        raise ConfigError(f"{path}: [data] takes 'test' or [data.holdout], not both")
    stack = data.get("stack", {})
    cal = data.get("calibration", {})
    out = data.get("output", {})
    cfg = RunConfig(
        name=name,
        competition=run["competition"],
        submission_competition=run.get("submission_competition", run["competition"]),
        out_dir=out_dir,
        models=tuple(models),
        train=_as_tuple(d["train"], "train", path) if "train" in d else (),
        test=d.get("test"),
        holdout=holdout,
        folds=run.get("folds"),
        seed=run.get("seed"),
        stack=stack.get("method", "auto"),
        stack_candidates=_as_tuple(stack.get("candidates", ["blend", "logistic", "lgbm"]),
                                   "candidates", path),
        stack_features=stack.get("features", "length"),
        calibration=cal.get("method", "auto"),
        calibration_candidates=_as_tuple(
            cal.get("candidates", ["temperature", "vector", "temperature_by_length"]),
            "candidates", path),
        submission=Path(out["submission"]) if "submission" in out else None,
        report=Path(out["report"]) if "report" in out else None,
        file=path,
    )
    if cfg.stack not in STACK_METHODS:
        raise ConfigError(f"{path}: [stack] method {cfg.stack!r} is not one of {STACK_METHODS}")
    for c in cfg.stack_candidates:
        if c not in STACK_METHODS[2:]:
            raise ConfigError(f"{path}: [stack] candidate {c!r} is not one of {STACK_METHODS[2:]}")
    if cfg.stack_features not in ("length", "none"):
        raise ConfigError(f"{path}: [stack] features must be 'length' or 'none'")
    if cfg.calibration not in CALIBRATION_METHODS:
        raise ConfigError(f"{path}: [calibration] method {cfg.calibration!r} is not one of "
                          f"{CALIBRATION_METHODS}")
    for c in cfg.calibration_candidates:
        if c not in CALIBRATION_METHODS[1:]:
            raise ConfigError(f"{path}: [calibration] candidate {c!r} is not one of "
                              f"{CALIBRATION_METHODS[1:]}")
    return cfg
