"""The configuration of ``prefpred run``: a TOML file checked by one schema and read into a
:class:`RunConfig` (see ``configs/demo.toml`` for every key).

Sections and keys (anything else is an error naming the closest valid key)::

    [run]          competition (required), name, submission_competition, out_dir, folds, seed,
                   jobs (base models fitted at a time, in worker processes; default 1)
    [data]         train (a file or a list), test (a file) or [data.holdout]
    [data.holdout] source, fraction (0 < f < 1), seed
    [[models]]     name (required), label, params (a table), params_file, config, backbone
    [stack]        method, candidates, features
    [calibration]  method, candidates
    [ensemble]     method: refit (one model per base model, refitted on all training rows;
                   the default) or folds (each fold's model predicts the test rows and their
                   logits are averaged); average_weights (backbone: one model whose LoRA
                   adapter and head are the folds' average)
    [distill]      teacher (required: a prefpred cv folder / oof.parquet or a run folder),
                   alpha (0.5), temperature (1.0), nested (true; false leaks, to measure it),
                   students (model labels; default every model), pseudo (unlabelled pairs),
                   pseudo_format, pseudo_weight (1.0), pseudo_min_confidence (0.0)
    [output]       submission, report

Names that become folder or file names (the run's name, model labels) must be safe path parts.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from prefpred.errors import ConfigError
from prefpred.io import safe_name
from prefpred.schema import Schema, read_toml, validate

STACK_METHODS = ("auto", "none", "blend", "logistic", "lgbm")
CALIBRATION_METHODS = ("auto", "none", "temperature", "vector", "temperature_by_length")
Stacker = Literal["blend", "logistic", "lgbm"]
Calibration = Literal["temperature", "vector", "temperature_by_length"]


class _RunSection(Schema):
    competition: str
    name: str | None = None
    submission_competition: str | None = None
    out_dir: str | None = None
    folds: Annotated[int, Field(ge=2)] | None = None
    seed: Annotated[int, Field(ge=0)] | None = None
    jobs: Annotated[int, Field(ge=1, le=64)] = 1


class _Holdout(Schema):
    source: str | None = None
    fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.2
    seed: Annotated[int, Field(ge=0)] = 0


class _DataSection(Schema):
    train: str | list[str] | None = None
    test: str | None = None
    holdout: _Holdout | None = None


class _Model(Schema):
    name: str
    label: str | None = None
    params: dict[str, Any] = {}
    params_file: str | None = None
    config: str | None = None
    backbone: str | None = None


class _Stack(Schema):
    method: Literal["auto", "none", "blend", "logistic", "lgbm"] = "auto"
    candidates: Stacker | list[Stacker] = ["blend", "logistic", "lgbm"]
    features: Literal["length", "none"] = "length"


class _Calibration(Schema):
    method: Literal["auto", "none", "temperature", "vector", "temperature_by_length"] = "auto"
    candidates: Calibration | list[Calibration] = ["temperature", "vector",
                                                   "temperature_by_length"]


class _Ensemble(Schema):
    method: Literal["refit", "folds"] = "refit"
    average_weights: bool = False


class _Distill(Schema):
    teacher: str
    alpha: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5
    temperature: Annotated[float, Field(gt=0.0)] = 1.0
    nested: bool = True
    students: str | list[str] | None = None
    pseudo: str | None = None
    pseudo_format: str | None = None
    pseudo_weight: Annotated[float, Field(gt=0.0)] = 1.0
    pseudo_min_confidence: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0


class _Output(Schema):
    submission: str | None = None
    report: str | None = None


class RunFile(Schema):
    """The whole run TOML."""

    run: _RunSection
    data: _DataSection = _DataSection()
    models: Annotated[list[_Model], Field(min_length=1)]
    stack: _Stack = _Stack()
    calibration: _Calibration = _Calibration()
    ensemble: _Ensemble = _Ensemble()
    distill: _Distill | None = None
    output: _Output = _Output()


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
class DistillSpec:
    """``[distill]``: see :mod:`prefpred.distill`."""

    teacher: str
    alpha: float = 0.5
    temperature: float = 1.0
    nested: bool = True
    students: tuple[str, ...] = ()
    pseudo: str | None = None
    pseudo_format: str | None = None
    pseudo_weight: float = 1.0
    pseudo_min_confidence: float = 0.0

    def build(self):
        from prefpred.distill import distillation_from_options

        return distillation_from_options(self.teacher, self.alpha, self.temperature,
                                         self.nested, self.pseudo, self.pseudo_format,
                                         self.pseudo_weight, self.pseudo_min_confidence)


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
    jobs: int = 1
    stack: str = "auto"
    stack_candidates: tuple[str, ...] = ("blend", "logistic", "lgbm")
    stack_features: str = "length"
    calibration: str = "auto"
    calibration_candidates: tuple[str, ...] = ("temperature", "vector", "temperature_by_length")
    ensemble: str = "refit"
    average_weights: bool = False
    distill: DistillSpec | None = None
    submission: Path | None = None
    report: Path | None = None
    file: Path | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        return json.loads(json.dumps(data, default=str))


def _tuple(value: str | list[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def read_run_config(path: str | Path) -> RunConfig:
    """Parse and check a run TOML (see the module docstring for every key)."""
    from prefpred.models.base import build_model, model_names
    from prefpred.params import model_params

    path = Path(path)
    spec = validate(RunFile, read_toml(path, "run configuration"), path)
    run, data = spec.run, spec.data
    name = safe_name(run.name or path.stem, f"{path}: [run] name")
    models = []
    for i, m in enumerate(spec.models, 1):
        if m.name not in model_names():
            raise ConfigError(f"{path}: [[models]] #{i}: unknown model {m.name!r}; choose one "
                              f"of {model_names()}")
        label = safe_name(m.label or m.name, f"{path}: [[models]] #{i} label")
        try:
            params = model_params(m.name, params_file=m.params_file, values=m.params,
                                  backbone=m.backbone, config=m.config)
            build_model(m.name, params)  # every parameter checked now, not after hours
        except ConfigError as err:
            raise ConfigError(f"{path}: [[models]] #{i}: {err}") from None
        models.append(ModelSpec(m.name, label, params))
    labels = [m.label for m in models]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{path}: model labels must be unique, got {labels}")
    if data.holdout is None and data.test is None:
        raise ConfigError(f"{path}: [data] needs 'test' (a test file) or a [data.holdout] table")
    if data.holdout is not None and data.test is not None:
        raise ConfigError(f"{path}: [data] takes 'test' or [data.holdout], not both")
    h = data.holdout
    distill = None
    if spec.distill is not None:
        d = spec.distill
        students = _tuple(d.students) if d.students is not None else tuple(labels)
        unknown = [s for s in students if s not in labels]
        if unknown:
            raise ConfigError(f"{path}: [distill] students: {unknown[0]!r} is not a model "
                              f"label; the labels are {labels}")
        distill = DistillSpec(d.teacher, d.alpha, d.temperature, d.nested, students, d.pseudo,
                              d.pseudo_format, d.pseudo_weight, d.pseudo_min_confidence)
    if spec.ensemble.average_weights and spec.ensemble.method != "folds":
        raise ConfigError(f"{path}: [ensemble] average_weights averages fold models: it needs "
                          "method = \"folds\"")
    return RunConfig(
        name=name,
        competition=run.competition,
        submission_competition=run.submission_competition or run.competition,
        out_dir=Path(run.out_dir or f"runs/{name}"),
        models=tuple(models),
        train=_tuple(data.train) if data.train is not None else (),
        test=data.test,
        holdout=None if h is None else HoldoutSpec(h.source, h.fraction, h.seed),
        folds=run.folds,
        seed=run.seed,
        jobs=run.jobs,
        stack=spec.stack.method,
        stack_candidates=_tuple(spec.stack.candidates),
        stack_features=spec.stack.features,
        calibration=spec.calibration.method,
        calibration_candidates=_tuple(spec.calibration.candidates),
        ensemble=spec.ensemble.method,
        average_weights=spec.ensemble.average_weights,
        distill=distill,
        submission=Path(spec.output.submission) if spec.output.submission else None,
        report=Path(spec.output.report) if spec.output.report else None,
        file=path,
    )
