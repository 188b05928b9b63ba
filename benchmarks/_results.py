"""Shared helpers for benchmarks: machine description, peak memory, and RESULTS.md tables."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
PROJECT_ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("PREFPRED_DATA_ROOT", PROJECT_ROOT.parent / "shared" / "data"))
WORK = Path(__file__).with_name("_work")


def machine() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return f"GPU {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return f"CPU {os.cpu_count()} cores ({platform.machine()})"


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (VmHWM), MiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def append_result(section: str, columns: list[str], rows: list[list], command: str,
                  note: str | None = None) -> None:
    """Append rows to the table under ``## section`` in RESULTS.md (created when missing)."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\nEvery row was " \
        "written by the command shown above its table; nothing here is typed by hand.\n"
    today = _dt.date.today().isoformat()
    header = "| date | machine | " + " | ".join(columns) + " |"
    rule = "|" + "---|" * (len(columns) + 2)
    lines = [f"| {today} | {machine()} | " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    heading = f"## {section}"
    if heading not in text:
        block = [f"\n{heading}\n", f"Command: `{command}`\n"]
        if note:
            block.append(note + "\n")
        block += [header, rule, *lines]
        text = text.rstrip("\n") + "\n" + "\n".join(block) + "\n"
    else:
        start = text.index(heading)
        nxt = re.search(r"\n## ", text[start + len(heading):])
        end = start + len(heading) + nxt.start() + 1 if nxt else len(text)
        section_text = text[start:end].rstrip("\n")
        if f"Command: `{command}`" not in section_text:  # another command: its own table
            section_text += (f"\n\nCommand: `{command}`\n" + (f"\n{note}\n" if note else "")
                             + "\n" + header + "\n" + rule)
        elif header not in section_text:  # columns changed: start a new table in this section
            section_text += "\n\n" + header + "\n" + rule
        section_text += "\n" + "\n".join(lines) + "\n"
        text = text[:start] + section_text + ("\n" + text[end:] if nxt else "")
    RESULTS.write_text(text)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)
