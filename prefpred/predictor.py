"""A fitted prediction pipeline: base models, then a stacker (or one base model), then a
calibrator, written by ``prefpred run`` and read by ``prefpred predict`` and by bundles.

A pipeline folder holds ``pipeline.json`` and, at the paths it names relative to itself, every
base model's saved folder (:func:`prefpred.models.base.save_model`; several folders for a fold
ensemble, whose logits are averaged), ``stacker.json``, ``calibrator.json`` and the submission
competition's TOML. Everything in it is validated when read; nothing in it names code, and
its paths stay inside the folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from prefpred.data.table import PreferenceTable
from prefpred.errors import DataError

PIPELINE_FILE = "pipeline.json"
PIPELINE_FORMAT = 1


def _inside(folder: Path, relative: str, file: Path) -> Path:
    """``folder / relative``, refusing any path that leaves ``folder``."""
    if not isinstance(relative, str) or not relative or Path(relative).is_absolute() or \
            not (folder / relative).resolve().is_relative_to(folder.resolve()):
        raise DataError(f"path {relative!r} is not inside the pipeline folder", file=file)
    return (folder / relative).resolve()


def write_pipeline(folder: Path, *, base_models: list[dict[str, Any]], stacker: str | None,
                   stack_features: str, calibrator: str, competition: str,
                   info: dict[str, Any]) -> Path:
    """``folder/pipeline.json`` naming the fitted parts (paths relative to ``folder``):
    ``base_models`` as ``{"label", "model", "dirs": [...]}`` (one dir, or one per fold)."""
    from prefpred import __version__
    from prefpred.features import FEATURE_VERSION
    from prefpred.io import write_json_atomic
    from prefpred.labels import CLASSES

    data = {"kind": "prefpred-pipeline", "format": PIPELINE_FORMAT, "classes": list(CLASSES),
            "feature_version": FEATURE_VERSION, "prefpred_version": __version__,
            "base_models": base_models, "stacker": stacker, "stack_features": stack_features,
            "calibrator": calibrator, "competition": competition, "info": info}
    write_json_atomic(folder / PIPELINE_FILE, data)
    return folder / PIPELINE_FILE


def read_pipeline(folder: str | Path) -> dict[str, Any]:
    """The checked ``pipeline.json`` of a pipeline folder (kind, format, class order, feature
    version, base model entries; every path it names stays inside the folder)."""
    from prefpred.features import FEATURE_VERSION
    from prefpred.io import read_json_header
    from prefpred.labels import CLASSES

    folder = Path(folder)
    file = folder / PIPELINE_FILE
    data = read_json_header(folder, PIPELINE_FILE, "prefpred-pipeline", PIPELINE_FORMAT,
                            "prefpred pipeline")
    if data.get("classes") != list(CLASSES):
        raise DataError(f"class order {data.get('classes')} is not {list(CLASSES)}",
                        file=file, column="classes")
    if data.get("feature_version") != FEATURE_VERSION:
        raise DataError(f"features of version {data.get('feature_version')!r}; this "
                        f"prefpred computes version {FEATURE_VERSION!r}", file=file,
                        column="feature_version")
    entries = data.get("base_models")
    if not isinstance(entries, list) or not entries:
        raise DataError("no base models", file=file, column="base_models")
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("dirs"), list) or \
                not entry["dirs"] or not isinstance(entry.get("label"), str) or \
                not all(isinstance(d, str) for d in entry["dirs"]):
            raise DataError("a base model needs a label and its saved folders", file=file,
                            column="base_models")
        for rel in [*entry["dirs"], *([entry["backbone"]] if entry.get("backbone") else [])]:
            _inside(folder, rel, file)
    labels = [e["label"] for e in entries]
    if len(set(labels)) != len(labels):
        raise DataError(f"a base model label is given twice: {labels}", file=file,
                        column="base_models")
    if not isinstance(data.get("info", {}), dict):
        raise DataError("expected an object", file=file, column="info")
    for key in ("calibrator", "competition"):
        if not isinstance(data.get(key), str):
            raise DataError(f"no {key}", file=file, column=key)
        _inside(folder, data[key], file)
    if data.get("stacker") is not None:
        _inside(folder, data["stacker"], file)
    return data


@dataclass
class Predictor:
    """The parts of a fitted pipeline, loaded; :meth:`predict` gives calibrated probabilities."""

    folder: Path
    base: dict[str, list[Any]]  # label -> fitted models (several: a fold ensemble)
    stacker: Any | None
    stack_features: str
    calibrator: Any
    competition: Any
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, folder: str | Path, **overrides: Any) -> Predictor:
        """Read and check a pipeline folder; ``overrides`` go to every backbone model's loader
        (where and how to predict: device, precision, batch budget...)."""
        from prefpred.calibration import load_calibrator
        from prefpred.competitions import parse_competition
        from prefpred.models.base import load_model
        from prefpred.schema import read_toml
        from prefpred.stack import load_stacker

        folder = Path(folder)
        file = folder / PIPELINE_FILE
        data = read_pipeline(folder)
        base: dict[str, list[Any]] = {}
        if overrides and not any(e.get("model") == "backbone" for e in data["base_models"]):
            from prefpred.errors import notice

            notice(f"{sorted(overrides)} apply to backbone models; this pipeline has none")
        for entry in data["base_models"]:
            runtime = overrides if entry.get("model") == "backbone" else {}
            if entry.get("backbone") and "backbone" not in runtime:  # base weights shipped
                runtime = {**runtime, "backbone": str(_inside(folder, entry["backbone"], file))}
            base[entry["label"]] = [load_model(_inside(folder, d, file), **runtime)
                                    for d in entry["dirs"]]
        stacker = (load_stacker(_inside(folder, data["stacker"], file))
                   if data.get("stacker") else None)
        if stacker is None and len(base) != 1:
            raise DataError("several base models need a stacker", file=file, column="stacker")
        if data.get("stack_features") not in ("length", "none"):
            raise DataError("stack_features must be length or none", file=file,
                            column="stack_features")
        calibrator = load_calibrator(_inside(folder, data["calibrator"], file))
        comp_file = _inside(folder, data["competition"], file)
        competition = parse_competition(read_toml(comp_file, "competition file"), comp_file)
        return cls(folder, base, stacker, data["stack_features"], calibrator, competition,
                   data.get("info") or {})

    def set_work_dir(self, path: str | Path) -> None:
        """Scratch space for the base models (streamed backbone predictions resume there)."""
        from prefpred.models.base import set_work_dir

        for label, models in self.base.items():
            for i, m in enumerate(models):
                set_work_dir(m, Path(path) / f"{label}_{i}")

    def describe(self) -> dict[str, Any]:
        """What this pipeline is, for provenance."""
        return {"folder": str(self.folder), "base_models": {k: len(v) for k, v in
                                                          self.base.items()},
                "stacker": None if self.stacker is None else type(self.stacker).__name__,
                "calibrator": type(self.calibrator).__name__, **self.info}

    def base_logits(self, table: PreferenceTable) -> dict[str, np.ndarray]:
        """Each base model's logits; a fold ensemble's are the mean of its models' logits."""
        from prefpred.models.base import check_logits

        out = {}
        for label, models in self.base.items():
            out[label] = np.mean([check_logits(m.predict_logits(table), len(table), label)
                                  for m in models], axis=0)
        return out

    def predict_logits(self, table: PreferenceTable) -> np.ndarray:
        """Calibrated logits (log-probabilities) of the whole pipeline."""
        from prefpred.features.lengths import length_features, pair_lengths

        logits = self.base_logits(table)
        if self.stacker is None:
            z = next(iter(logits.values()))
        else:
            feats = length_features(table) if self.stack_features == "length" else None
            z = self.stacker.predict_logits(logits, feats)
        return self.calibrator.predict_logits(z, lengths=pair_lengths(table))

    def predict_proba(self, table: PreferenceTable) -> np.ndarray:
        from prefpred.probabilities import softmax

        return softmax(self.predict_logits(table))


def assemble_pipeline(folder: str | Path, models: list[tuple[str, Path]], *,
                      competition: str, stacker: Path | None = None,
                      calibrator: Path | None = None) -> Path:
    """A pipeline folder from separately saved parts: ``models`` as (label, folder) pairs (a
    saved model, or a bare backbone artifact as ``prefpred cv`` / ``fit`` leave them; a label
    given several times is a fold ensemble), a stacker and a calibrator file (none: the
    uncalibrated output), and a competition (name or TOML). Every part is checked by loading
    the assembled pipeline; the stacker must name exactly the labels given."""
    import shutil

    from prefpred.calibration import load_calibrator, make_calibrator
    from prefpred.competitions import load_competition
    from prefpred.io import safe_name
    from prefpred.models.base import MODEL_FILE, write_model_info
    from prefpred.stack import load_stacker

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    entries: dict[str, dict[str, Any]] = {}
    for label, src in models:
        label = safe_name(label, "--model label")
        src = Path(src)
        entry = entries.setdefault(label, {"label": label, "model": None, "dirs": []})
        dest = folder / "models" / label / str(len(entry["dirs"]))
        if (src / MODEL_FILE).is_file():
            shutil.copytree(src, dest)
            name = json.loads((src / MODEL_FILE).read_text(encoding="utf-8")).get("model")
        elif (src / "prefpred_config.json").is_file():  # a bare backbone artifact
            from prefpred.models.backbone.artifacts import ARTIFACT_ENTRIES, read_artifact_info

            params = read_artifact_info(src)["params"]
            # only what an artifact is made of: model.json's digests will vouch for every file
            shutil.copytree(src, dest / "artifact", ignore=lambda d, names, top=src: [
                n for n in names if Path(d) == top and n not in ARTIFACT_ENTRIES])
            write_model_info(dest, "backbone", params)
            name = "backbone"
        else:
            raise DataError("neither a saved model (model.json) nor a backbone artifact "
                            "(prefpred_config.json)", file=src)
        if entry["model"] not in (None, name):
            raise DataError(f"label {label!r} names both {entry['model']} and {name} models",
                            file=src)
        entry["model"] = name
        entry["dirs"].append(dest.relative_to(folder).as_posix())
    final = folder / "final"
    final.mkdir(exist_ok=True)
    stack_features = "none"
    if stacker is not None:
        fitted = load_stacker(stacker)
        if sorted(fitted.models_ or []) != sorted(entries):
            raise DataError(f"the stacker combines {fitted.models_}, not the models given "
                            f"{sorted(entries)}", file=stacker)
        stack_features = "length" if fitted.feature_names_ else "none"
        shutil.copyfile(stacker, final / "stacker.json")
    elif len(entries) != 1:
        raise DataError(f"{len(entries)} base models need a stacker (--stacker)", file=folder)
    (load_calibrator(calibrator) if calibrator is not None else make_calibrator("none")).save(
        final / "calibrator.json")
    comp = load_competition(competition)
    shutil.copyfile(comp.file, final / "competition.toml")
    write_pipeline(folder, base_models=list(entries.values()),
                   stacker="final/stacker.json" if stacker is not None else None,
                   stack_features=stack_features, calibrator="final/calibrator.json",
                   competition="final/competition.toml", info={"assembled": True})
    Predictor.load(folder)
    return folder
