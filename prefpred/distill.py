"""Distillation and pseudo-labels, honestly cross-validated.

A *teacher* is a finished prefpred output: a ``prefpred cv`` folder (or its ``oof.parquet``),
or a ``prefpred run`` folder (its base models and, when the run chose one, its stacker). The
student trains on ``(1 - alpha) * label + alpha * softmax(teacher / temperature)``
(:func:`prefpred.targets.teacher_mix`), and optionally on unlabelled pairs the teacher labels
(pseudo-labels, soft, filtered by confidence, down-weighted).

The honest rule: when the student's fold k is scored, no teacher target it trained on may come
from a teacher that saw fold k's labels. Out-of-fold teacher logits break it (a row of fold j
got its logit from a teacher trained on every fold but j, fold k included). So the teacher is
refitted from its recorded specification inside each student training split: for the student's
fold k, the target of a row in fold j (j != k) comes from a teacher trained on the folds other
than j and k; a pseudo-labelled row joins the fold of its prompt group and is labelled the same
way. That is K * (K - 1) teacher fits, plus K for the targets of the final refit on all rows
(plain out-of-fold logits: honest there, no score is computed from those rows). All of it is
cached under the student's run folder, keyed by the teacher, the data and the folds.
``nested = False`` uses the plain out-of-fold teacher logits in CV too: the 1st-place LMSYS
recipe's leak, kept only to measure it; the scores then say ``(leaky)``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from prefpred.data.table import PreferenceTable
from prefpred.errors import ConfigError, DataError
from prefpred.io import json_digest
from prefpred.labels import N_CLASSES
from prefpred.stages import folds_digest
from prefpred.targets import Targets, masked_log_softmax, teacher_mix


# --------------------------------------------------------------------------- the teacher
@dataclass(frozen=True)
class TeacherModel:
    label: str
    model: str  # registered name
    params: dict[str, Any]


@dataclass(frozen=True)
class Teacher:
    """What is refitted: base models and, for a stacked teacher, the stacker's name."""

    path: str
    models: tuple[TeacherModel, ...]
    stacker: str | None = None
    stack_features: str = "none"

    def describe(self) -> dict[str, Any]:
        return {"models": [[m.label, m.model, m.params] for m in self.models],
                "stacker": self.stacker, "stack_features": self.stack_features}

    @property
    def name(self) -> str:
        base = "+".join(m.label for m in self.models)
        return f"{self.stacker}({base})" if self.stacker else base


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read the teacher's record: {exc}", file=path) from None


def _cv_model(folder: Path, model: str | None = None) -> TeacherModel:
    """The model a ``prefpred cv`` folder fitted (``model``: its registered name, when the
    folder was written under a label, as ``prefpred run`` does)."""
    from prefpred.models.base import MODEL_REGISTRY, build_model

    record = folder / "scores.json"
    data = _json(record)
    name = data.get("model") if isinstance(data, dict) else None
    params = data.get("params") if isinstance(data, dict) else None
    model = model or (data.get("registered_model") if isinstance(data, dict) else None)
    if not isinstance(name, str) or not isinstance(params, dict):
        raise DataError("not a prefpred cv record (model and params)", file=record)
    if (model or name) not in MODEL_REGISTRY:
        raise DataError(f"model {model or name!r} is not a registered model; pass the run "
                        f"folder that names it", file=record, column="model")
    try:  # a hand-edited record fails here, not after the first teacher fits
        build_model(model or name, params)
    except ConfigError as err:
        raise DataError(f"the teacher's parameters: {err}", file=record, column="params") from None
    return TeacherModel(name, model or name, params)


def read_teacher(path: str | Path) -> Teacher:
    """A teacher from a ``prefpred cv`` folder / ``oof.parquet`` or a ``prefpred run`` folder."""
    from prefpred.oof import OOF_FILE
    from prefpred.stack import stacker_of

    p = Path(path)
    if p.is_file() and p.name == OOF_FILE:
        from prefpred.oof import read_oof

        read_oof(p, "the teacher's out-of-fold file")  # named, so it must be a valid one
        p = p.parent
    if not p.is_dir():
        raise DataError(f"{'not a' if p.exists() else 'no such'} teacher: give a prefpred cv "
                        "folder, its oof.parquet, or a prefpred run folder", file=p)
    if (p / "pipeline.json").is_file():
        from prefpred.predictor import read_pipeline

        pipe = read_pipeline(p)
        final = pipe.get("info", {}).get("final_model")
        labels = {e["label"]: e.get("model") for e in pipe["base_models"]}
        stacker = stacker_of(final) if isinstance(final, str) else None
        if stacker is None and final in labels:
            labels = {final: labels[final]}
        models = []
        for label, model in labels.items():
            spec = _cv_model(p / "cv" / label, model)
            models.append(TeacherModel(label, spec.model, spec.params))
        return Teacher(str(p), tuple(models), stacker,
                       pipe.get("stack_features", "none") if stacker else "none")
    if (p / "scores.json").is_file():
        return Teacher(str(p), (_cv_model(p),))
    raise DataError("not a teacher: neither pipeline.json (prefpred run) nor scores.json "
                    "(prefpred cv) is there", file=p)


# --------------------------------------------------------------------------- teacher logits
@dataclass
class TeacherLogits:
    """``outer`` (n, 3): plain out-of-fold logits; ``nested[k]`` (n, 3): for the student's fold
    k, NaN on fold k's rows; ``*_extra``: the same for the unlabelled (pseudo) rows."""

    outer: np.ndarray
    nested: dict[int, np.ndarray]
    outer_extra: np.ndarray
    nested_extra: dict[int, np.ndarray]


def pseudo_folds(table: PreferenceTable, folds: np.ndarray, extra: PreferenceTable) -> np.ndarray:
    """Each unlabelled row's fold: its prompt group's fold in ``table``; a group the table does
    not have goes to a fold by a stable hash of the group key."""
    fold_of = dict(zip(table.groups().tolist(), np.asarray(folds).tolist(), strict=True))
    ids = sorted(set(np.asarray(folds).tolist()))
    out = []
    for g in extra.groups().tolist():
        k = fold_of.get(g)
        if k is None:
            k = ids[int(hashlib.sha256(str(g).encode()).hexdigest(), 16) % len(ids)]
        out.append(k)
    return np.asarray(out, dtype=np.int64)


def _cached(path: Path | None, key: dict[str, Any], compute: Callable[[], dict[str, np.ndarray]],
            shapes: dict[str, tuple[int, int]]) -> dict[str, np.ndarray]:
    """``compute()`` (arrays of ``shapes``), saved at ``path`` with its key and read back while
    the key matches and the arrays have those shapes and finite values."""
    from prefpred.io import atomic_path, read_back

    def fits(z: dict[str, np.ndarray]) -> bool:
        return all(name in z and z[name].shape == shape and np.isfinite(z[name]).all()
                   for name, shape in shapes.items())

    if path is not None:
        saved = read_back(path, lambda p: dict(np.load(p, allow_pickle=False)), "a teacher fit",
                          check=fits)
        if saved is not None and str(saved.pop("key", "")) == json_digest(key):
            return saved
    out = compute()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, key=np.asarray(json_digest(key)), **out)
    return out


def teacher_logits(teacher: Teacher, table: PreferenceTable, folds: np.ndarray, *,
                   extra: PreferenceTable | None = None, nested: bool = True,
                   cache: Path | None = None, say: Callable[[str], None] | None = None
                   ) -> TeacherLogits:
    """Refit the teacher for every (held-out fold j, excluded fold k) and the plain folds."""
    from prefpred.models.base import build_model, check_logits

    folds = np.asarray(folds)
    fold_ids = sorted(set(folds.tolist()))
    extra_folds = (pseudo_folds(table, folds, extra) if extra is not None
                   else np.zeros(0, dtype=np.int64))
    splits = [(j, None) for j in fold_ids]
    if nested:
        splits += [(j, k) for k in fold_ids for j in fold_ids if j != k]
    base_key = {"table": table.fingerprint(), "folds": folds_digest(folds),
                "extra": None if extra is None else extra.fingerprint()}
    base: dict[str, dict[tuple[int, int | None], dict[str, np.ndarray]]] = {}
    for spec in teacher.models:
        base[spec.label] = {}
        for j, k in splits:
            train = (folds != j) & (folds != k if k is not None else True)
            held, held_extra = folds == j, extra_folds == j

            def compute(spec=spec, train=train, held=held, held_extra=held_extra):
                model = build_model(spec.model, spec.params)
                model.fit(table.filter(train))
                out = {"rows": check_logits(model.predict_logits(table.filter(held)),
                                            int(held.sum()), spec.label)}
                out["extra"] = (check_logits(model.predict_logits(extra.filter(held_extra)),
                                             int(held_extra.sum()), spec.label)
                                if extra is not None and held_extra.any()
                                else np.zeros((0, N_CLASSES)))
                return out

            key = {**base_key, "model": [spec.model, spec.params], "held": j, "excluded": k}
            name = f"{spec.label}_{j}" + ("" if k is None else f"_without_{k}")
            base[spec.label][(j, k)] = _cached(
                None if cache is None else cache / f"{name}.npz", key, compute,
                {"rows": (int(held.sum()), N_CLASSES),
                 "extra": (int(held_extra.sum()) if extra is not None else 0, N_CLASSES)})
        if say is not None:
            say(f"teacher {spec.label}: {len(splits)} fits ready")
    if teacher.stacker is None:
        (label,) = base
        level = {s: base[label][s] for s in splits}
    else:
        level = _stack_level(teacher, table, folds, extra, extra_folds, base, splits)
    n, m = len(table), len(extra_folds)

    def assemble(k: int | None) -> tuple[np.ndarray, np.ndarray]:
        rows, rows_extra = np.full((n, N_CLASSES), np.nan), np.full((m, N_CLASSES), np.nan)
        for j in fold_ids:
            if j == k:
                continue
            rows[folds == j] = level[(j, k)]["rows"]
            rows_extra[extra_folds == j] = level[(j, k)]["extra"]
        return rows, rows_extra

    outer, outer_extra = assemble(None)
    nested_rows, nested_extra = {}, {}
    for k in fold_ids:
        nested_rows[k], nested_extra[k] = assemble(k) if nested else (outer, outer_extra)
    return TeacherLogits(outer, nested_rows, outer_extra, nested_extra)


def _stack_level(teacher, table, folds, extra, extra_folds, base, splits):
    """The stacker refitted per split on the base logits of that split's level: for (j, k) it
    trains on the rows outside folds j and k (their logits from teachers that never saw fold
    k) and predicts fold j."""
    from prefpred.features.lengths import length_features
    from prefpred.stack import make_stacker

    def feats(t):
        if t is None or teacher.stack_features != "length":
            return None
        return length_features(t).to_numpy()

    f_rows, f_extra = feats(table), feats(extra)
    y, three, w = table.labels(), table.tie_allowed(), table.weights()
    levels: dict[int | None, dict[str, np.ndarray]] = {}  # excluded fold -> base logits
    for jj, kk in splits:
        level = levels.setdefault(kk, {label: np.full((len(table), N_CLASSES), np.nan)
                                       for label in base})
        for label in base:
            level[label][folds == jj] = base[label][(jj, kk)]["rows"]
    out = {}
    for j, k in splits:
        logits = levels[k]
        train = (folds != j) & (folds != k if k is not None else True) & three
        stacker = make_stacker(teacher.stacker)
        stacker.fit({lab: v[train] for lab, v in logits.items()}, y[train],
                    None if f_rows is None else f_rows[train], w[train], folds[train])
        held, held_extra = folds == j, extra_folds == j
        rows = stacker.predict_logits({lab: v[held] for lab, v in logits.items()},
                                      None if f_rows is None else f_rows[held])
        ex = np.zeros((0, N_CLASSES))
        if extra is not None and held_extra.any():
            ex = stacker.predict_logits({lab: base[lab][(j, k)]["extra"] for lab in base},
                                        None if f_extra is None else f_extra[held_extra])
        out[(j, k)] = {"rows": rows, "extra": ex}
    return out


# --------------------------------------------------------------------------- the student's data
@dataclass
class Distillation:
    """Turns the student's training rows into distillation targets (+ pseudo-labelled rows)."""

    teacher: Teacher
    alpha: float = 0.5
    temperature: float = 1.0
    nested: bool = True
    pseudo: PreferenceTable | None = None
    pseudo_weight: float = 1.0
    min_confidence: float = 0.0
    logits: TeacherLogits | None = field(default=None, repr=False)
    pseudo_fold: np.ndarray | None = field(default=None, repr=False)
    folds: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # (written so that NaN fails every check)
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"distill alpha {self.alpha} is not in [0, 1]")
        if not 0.0 < self.temperature < float("inf"):
            raise ConfigError(f"distill temperature {self.temperature} must be a positive number")
        if not 0.0 < self.pseudo_weight < float("inf") or not 0.0 <= self.min_confidence < 1.0:
            raise ConfigError("pseudo weight must be a positive number and min confidence in "
                              "[0, 1)")

    def check_output(self, out_dir: Path) -> None:
        """Refuse an output folder that is the teacher's folder, holds it or lies inside it: an
        output never replaces an input."""
        out, teacher = Path(out_dir).resolve(), Path(self.teacher.path).resolve()
        if out == teacher or teacher in out.parents or out in teacher.parents:
            raise ConfigError(f"the output folder {out_dir} would overwrite the teacher "
                              f"{self.teacher.path}; choose another run folder or label")

    def teacher_key(self) -> dict[str, Any]:
        """What the teacher's logits depend on (its refits cache): not alpha, temperature,
        pseudo weight or confidence filter, which only change how they are used."""
        return {"teacher": self.teacher.describe(), "nested": self.nested,
                "pseudo": None if self.pseudo is None else self.pseudo.fingerprint()}

    def key(self) -> dict[str, Any]:
        return {**self.teacher_key(), "alpha": self.alpha, "temperature": self.temperature,
                "pseudo_weight": self.pseudo_weight, "min_confidence": self.min_confidence}

    def prepare(self, table: PreferenceTable, folds: np.ndarray, cache: Path | None,
                say: Callable[[str], None] | None = None) -> Distillation:
        if self.pseudo is not None:
            clash = set(self.pseudo.ids) & set(table.ids)
            if clash:
                raise DataError(f"pseudo-label row id {sorted(clash)[0]!r} is also a training "
                                f"row id", file=self.pseudo.origin, column="id")
            self.pseudo_fold = pseudo_folds(table, folds, self.pseudo)
        self.logits = teacher_logits(self.teacher, table, folds, extra=self.pseudo,
                                     nested=self.nested, cache=cache, say=say)
        self.folds = np.asarray(folds)
        return self

    def _pseudo_rows(self, logits: np.ndarray, keep: np.ndarray) -> PreferenceTable | None:
        if self.pseudo is None or not keep.any():
            return None
        rows = self.pseudo.filter(keep)
        allowed = rows.allowed_classes()
        probs = np.where(allowed, np.exp(masked_log_softmax(logits[keep] / self.temperature,
                                                            allowed)), 0.0)
        sure = probs.max(1) >= self.min_confidence
        if not sure.any():
            return None
        rows, probs = rows.filter(sure), probs[sure]
        return rows.with_columns(label=probs.argmax(1), soft_label=probs,
                                 weight=rows.weights() * self.pseudo_weight)

    def _train(self, rows: PreferenceTable, logits: np.ndarray,
               pseudo: PreferenceTable | None) -> PreferenceTable:
        if self.alpha > 0:
            mixed = teacher_mix(Targets.from_table(rows), logits, self.alpha, self.temperature)
            rows = rows.with_columns(soft_label=mixed.probs)
        return rows if pseudo is None else PreferenceTable.concat([rows, pseudo])

    def fold_table(self, table: PreferenceTable, k: int, train_idx: np.ndarray
                   ) -> PreferenceTable:
        """The student's training rows for its fold k."""
        z = self.logits.nested[k]
        pseudo = None
        if self.pseudo is not None:
            pseudo = self._pseudo_rows(self.logits.nested_extra[k], self.pseudo_fold != k)
        return self._train(table.take(train_idx), z[train_idx], pseudo)

    def full_table(self, table: PreferenceTable) -> PreferenceTable:
        """The training rows of the final refit (targets from the plain out-of-fold teacher)."""
        pseudo = None
        if self.pseudo is not None:
            pseudo = self._pseudo_rows(self.logits.outer_extra,
                                       np.ones(len(self.pseudo), dtype=bool))
        return self._train(table, self.logits.outer, pseudo)

    def side_by_side(self, table: PreferenceTable, student, alone: Path | None = None) -> str:
        """One line each: the teacher (refitted, out of fold), the student alone (its ``prefpred
        cv`` folder, when there is one for the same data) and the student distilled."""
        from prefpred.metrics import score_by, table_scoring
        from prefpred.probabilities import softmax

        def overall(logits: np.ndarray) -> float:
            frame = score_by(table.labels(), softmax(logits), table.column("source").to_numpy(),
                             **table_scoring(table))
            return float(frame.filter(pl.col("group") == "ALL")["log_loss"][0])

        lines = [f"teacher {self.teacher.name} (refitted, out of fold): log loss "
                 f"{overall(self.logits.outer):.4f}"]
        if alone is not None and (alone / "cv_key.json").is_file():
            try:  # only a run on the same rows and folds, without a teacher, compares
                key = json.loads((alone / "cv_key.json").read_text(encoding="utf-8"))
                data = json.loads((alone / "scores.json").read_text(encoding="utf-8"))
                same = (key.get("table") == table.fingerprint() and "extra" not in key
                        and key.get("folds") == folds_digest(self.folds))
                ll = next(s["log_loss"] for s in data["scores"] if s["group"] == "ALL")
                if same:
                    lines.append(f"student alone ({alone}): log loss {ll:.4f}")
            except (OSError, ValueError, KeyError, StopIteration, TypeError):
                pass
        lines.append(f"student distilled: log loss {student.log_loss:.4f}")
        return "\n".join(lines)

    def summary(self) -> str:
        targets = ("nested teacher targets" if self.nested
                   else "LEAKY out-of-fold teacher targets")
        text = (f"distilled from {self.teacher.name} (alpha {self.alpha}, temperature "
                f"{self.temperature}, {targets})")
        if self.pseudo is not None:
            text += f", {len(self.pseudo)} pseudo-label candidates (weight {self.pseudo_weight})"
        return text


def pseudo_table(path: str | Path, format: str | None = None) -> PreferenceTable:
    """Unlabelled pairs to pseudo-label, from any supported format (labels, if any, dropped)."""
    from prefpred.data.formats import load_table

    try:
        table = load_table(Path(path), format)
    except DataError as err:  # the option here is --pseudo-format
        raise DataError(str(err).replace("pass --format", "pass --pseudo-format")) from None
    # everything built from the hidden labels goes: the label, a soft label, the votes and the
    # vote-agreement weight
    n = len(table)
    return table.with_columns(label=pl.Series([None] * n, dtype=pl.Int8),
                              soft_label=pl.Series([None] * n, dtype=table.df.schema["soft_label"]),
                              votes=pl.Series([None] * n, dtype=table.df.schema["votes"]),
                              weight=pl.Series(np.ones(n), dtype=pl.Float64))


def distillation_from_options(teacher: str | Path | None, alpha: float | None,
                              temperature: float = 1.0, nested: bool = True,
                              pseudo: str | Path | None = None, pseudo_format: str | None = None,
                              pseudo_weight: float = 1.0, min_confidence: float = 0.0
                              ) -> Distillation | None:
    """The ``--teacher`` / ``--distill-*`` / ``--pseudo*`` options (or ``[distill]``) as a
    :class:`Distillation`, or None without a teacher."""
    if teacher is None:
        if alpha is not None or pseudo is not None:
            raise ConfigError("--distill-alpha and --pseudo need --teacher PATH")
        return None
    return Distillation(read_teacher(teacher), 0.5 if alpha is None else alpha, temperature,
                        nested, None if pseudo is None else pseudo_table(pseudo, pseudo_format),
                        pseudo_weight, min_confidence)
