"""The six LLMBar judges (Vanilla; and Rating where present) through ``prefpred evaluate-judge``,
per subset and overall, for comparison with the LLMBar paper (Zeng et al. 2023, "Evaluating
Large Language Models at Evaluating Instruction Following"), whose "Acc." is the mean accuracy
of the two orders (``avg acc`` here) and "Agr." the positional agreement (LLMBar's ``equal``:
``agreement (LLMBar)`` here, where two missing verdicts agree).

    .venv/bin/python benchmarks/bench_judges.py [--bootstrap 1000] [--no-record]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _results import DATA, WORK, append_result  # noqa: E402

COLUMNS = ["judge", "strategy", "subset", "n", "missing", "acc original", "acc swapped",
           "avg acc", "both-correct", "agreement", "agreement (LLMBar)", "first-position share",
           "log loss verdict pairs (calibrated)", "log loss prior"]
NOTE = ("Missing verdicts (null in the files) count as wrong, as in LLMBar's own script; "
        "`agreement` never counts a missing verdict as agreeing, `agreement (LLMBar)` counts two "
        "missing verdicts as agreeing (LLMBar's `equal`; they differ for PaLM2 only). "
        "first-position share: decisive verdicts of both orders that pick the response shown "
        "first (Rating derives both orders' verdicts from the same two scores, breaking equal "
        "scores towards response 2 in the original order and response 1 in the swapped one, so "
        "its 'position' share is a tie-breaking artefact). Log loss: two-way, out of fold (5 "
        "folds grouped by prompt), the add-1 table of verdict pairs against the class prior. "
        "Subsets: Natural 100 pairs, Adversarial Neighbor 134, GPTInst 92, GPTOut 47, Manual 46.")


def _f(value) -> str:
    return "" if value is None else f"{value:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    out = WORK / "judges"
    command = [str(Path(sys.executable).with_name("prefpred")), "evaluate-judge", "--judgments",
               str(DATA / "llmbar"), "--out", str(out), "--bootstrap", str(args.bootstrap)]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    summary = json.loads((out / "summary.json").read_text())
    rows = []
    judges = sorted(summary["judges"], key=lambda j: (j.split("/")[1] != "Vanilla", j))
    for judge in judges:
        scope = summary["judges"][judge]
        name, strategy = judge.split("/")
        for subset, block in [*scope["subsets"].items(), ("all", scope["overall"])]:
            cal = {r["map"]: r["log_loss"] for r in block["calibration"]
                   if r["map"] == "prior" or r["method"] != "uncalibrated"}
            rows.append([name, strategy, subset, block["n_pairs"], block["n_missing"],
                         _f(block["accuracy_original"]), _f(block["accuracy_swapped"]),
                         _f(block["accuracy_average"]), _f(block["accuracy_both"]),
                         _f(block["agreement"]), _f(block["agreement_llmbar"]),
                         _f(block["first_position_share"]), _f(cal.get("verdict_pairs")),
                         _f(cal.get("prior"))])
    for row in rows:
        print(" | ".join(str(v) for v in row))
    print(f"evaluate-judge over {len(summary['inputs'])} files: {seconds:.1f} s")
    if not args.no_record:
        append_result("LLM judges on LLMBar (evaluate-judge)", COLUMNS, rows,
                      "python benchmarks/bench_judges.py",
                      note="It runs `prefpred evaluate-judge --judgments ../shared/data/llmbar "
                           "--out benchmarks/_work/judges`. " + NOTE + f" It took {seconds:.1f} s for "
                                  f"{len(summary['inputs'])} files.")


if __name__ == "__main__":
    main()
