"""What a job's report costs: each workflow's report rule on the sample data, against the job's
other rules, all run by hand one after another on one core (no makeflow, no Work Queue).

    LMWEB_SAMPLE_DATA=../shared/data .venv/bin/python -m bench.report_cost

Prints, per workflow example, the report rule's CPU seconds and peak resident memory, and the CPU
seconds of the job's other rules (the computing asked for) as the baseline: the report is worth
its place while it stays a fraction of that, and under 10 s of one core. Needs the sample data
(LMWEB_SAMPLE_DATA): without it the script says so and stops. Not a test.
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

import translators
from tests import synthetic
from tests.support.stages import produced, run_measured, write_files
from translators.mcpa.workflow import WORKFLOW as MCPA
from translators.occurrence_cleaning.workflow import WORKFLOW as OCCURRENCES
from translators.report import REPORT

GOAL_CPU_SECONDS = 10.0


def dataset_id(number: int) -> str:
    """A dataset id for a request planned by hand (the plan only names the staged files)."""
    return f"00000000-0000-0000-0000-{number:012d}"


def run(stage, folder: Path) -> tuple[float, tuple[float, float] | None]:
    """A stage's rules in order: the CPU seconds of all but the report, and the report's
    (CPU seconds, peak MB) when the stage has it."""
    write_files(stage, folder)
    others, report = 0.0, None
    for rule in stage.makeflow["rules"]:
        _, cpu, peak = run_measured(rule, folder)
        if REPORT in rule["outputs"]:
            report = (cpu, peak)
        else:
            others += cpu
    return others, report


def pam_stats(data: Path, folder: Path):
    (folder / "inputs").mkdir()
    (folder / "inputs/pam.lmm").write_bytes(
        (data / "heuchera/heuchera_rfolk_1deg_global_noempties.lmm").read_bytes()
    )
    (folder / "inputs/tree.nex").write_bytes((data / "heuchera/heuchera.nex").read_bytes())
    params = {"randomizations": 20, "seed": 1}
    asked = {
        "workflow": "pam-stats",
        "inputs": {"pam": dataset_id(1), "tree": dataset_id(2)},
        "params": params,
    }
    stage = translators.get("pam-stats").plan(
        asked, {"pam": "inputs/pam.lmm", "tree": "inputs/tree.nex"}, []
    )
    return "pam-stats, Heuchera (2,114 x 55, tree), 20 randomizations", [run(stage, folder)]


def mcpa(data: Path, folder: Path):
    staged = {
        "pam": "inputs/pam.lmm",
        "tree": "inputs/tree.nex",
        "environment": ["inputs/environment-0.tif"],
        "hypotheses": "inputs/hypotheses.zip",
    }
    example = {
        key: value[0] if isinstance(value, list) else value
        for key, value in MCPA.example["inputs"].items()
    }
    sources = {key: data / MCPA.example_data[value] for key, value in example.items()}
    (folder / "inputs").mkdir()
    for key in ("pam", "tree"):
        (folder / staged[key]).write_bytes(sources[key].read_bytes())
    (folder / staged["environment"][0]).write_bytes(sources["environment"].read_bytes())
    (folder / staged["hypotheses"]).write_bytes(synthetic.folder_zip(sources["hypotheses"]))
    inputs = {
        "pam": dataset_id(1),
        "tree": dataset_id(2),
        "environment": [dataset_id(3)],
        "hypotheses": dataset_id(4),
    }
    # Permutations made small: the heatmap's cost does not grow with them.
    params = {**MCPA.example["params"], "permutations": 2}
    stage = MCPA.plan({"workflow": "mcpa", "inputs": inputs, "params": params}, staged, [])
    return "mcpa, Heuchera example (44 nodes, ecoregions, 3 hypotheses), 2 permutations", [
        run(stage, folder)
    ]


def occurrence_cleaning(data: Path, folder: Path):
    staged = {
        "occurrences": ["inputs/occurrences-0.csv", "inputs/occurrences-1.zip"],
        "name_map": "inputs/name_map.txt",
    }
    (folder / "inputs").mkdir()
    paths = [*staged["occurrences"], staged["name_map"]]
    for path, source in zip(paths, OCCURRENCES.example_data.values(), strict=True):
        (folder / path).write_bytes((data / source).read_bytes())
    params = OCCURRENCES.with_defaults(OCCURRENCES.example["params"])
    split = OCCURRENCES.next_stage(params, staged, [], {})
    stages = [run(split, folder)]
    made = {"split": produced(split, folder)}
    clean = OCCURRENCES.next_stage(params, staged, ["split"], made)
    stages.append(run(clean, folder))
    return "occurrence-cleaning, the example (heuchera.csv, iDigBio DwCA, name map)", stages


CASES = {"pam-stats": pam_stats, "mcpa": mcpa, "occurrence-cleaning": occurrence_cleaning}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated workflows")
    args = parser.parse_args(argv)
    sample = os.environ.get("LMWEB_SAMPLE_DATA")
    if not sample or not Path(sample).is_dir():
        print("report_cost: set LMWEB_SAMPLE_DATA to the sample data folder", file=sys.stderr)
        return 2
    wanted = [w.strip() for w in args.only.split(",") if w.strip()] or list(CASES)
    print(
        "| workflow example | report rule (CPU, peak) | other rules by hand (CPU) | ratio | met |"
    )
    print("|---|---|---|---|---|")
    for name in wanted:
        with tempfile.TemporaryDirectory(prefix=f"report-cost-{name}-") as scratch:
            title, stages = CASES[name](Path(sample), Path(scratch))
        others = sum(cpu for cpu, _ in stages)
        (cpu, peak) = next(report for _, report in stages if report is not None)
        met = "yes" if cpu <= GOAL_CPU_SECONDS else "**no**"
        print(
            f"| {title} | {cpu:.1f} s, {peak:.0f} MB | {others:.1f} s | {cpu / others:.2f} "
            f"| {met} (<= {GOAL_CPU_SECONDS:.0f} s CPU) |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
