"""B9: pam-stats on the Heuchera PAM and tree at its production size, against the same library
calls in one process per core on the same cores, in the same run, with the same seed.

The same calls: lmpy's randomization, wranglers and permutation counts, and the rules'
statistics (pam_statistics, PamStats' values vectorized). `python -m bench.direct pam-stats
--lmpy-statistics` runs lmpy's PamStats instead: the same values to 1e-9, but many sites tie on
an ultrametric tree, and rounding decides some of those ties otherwise, so its p-values differ
in a few cells."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from translators.pam_stats.workflow import TESTED, TESTED_WITH_TREE

from .client import seconds_between, service_seconds
from .measures import WORKERS, Row, _demo_module
from .stack import ROOT

SEED = 9
METHOD, ALPHA = "fdr", 0.05
# The sample data's Heuchera PAM and tree (LMWEB_SAMPLE_DATA/heuchera/).
SAMPLE_PAM = "heuchera/heuchera_rfolk_1deg_global_noempties.lmm"
SAMPLE_TREE = "heuchera/heuchera.nex"
# Heuchera's tree has 64 tips for the PAM's 55 species: the generated tree has as many more.
EXTRA_TIPS = 9
COMPARED = [
    "p_values_diversity.lmm",
    "p_values_site_stats.lmm",
    "significant_site_stats.lmm",
    "p_values_species_stats.lmm",
    "significant_species_stats.lmm",
]


def inputs(folder: Path, species: int, side: int) -> tuple[Path, Path, str]:
    """The sample data's Heuchera PAM and tree where LMWEB_SAMPLE_DATA is set; otherwise a
    seeded PAM of the same shape and a tree with as many extra tips, made as the demo makes them."""
    sample = os.environ.get("LMWEB_SAMPLE_DATA")
    if sample and (Path(sample) / SAMPLE_PAM).is_file():
        return Path(sample) / SAMPLE_PAM, Path(sample) / SAMPLE_TREE, "Heuchera sample data"
    demo = _demo_module()
    pam, tree = folder / "pam.lmm", folder / "tree.tre"
    names = demo.make_pam(pam, species=species, side=side, seed=SEED)
    extra = [f"Outgroup species {i:02d}" for i in range(1, EXTRA_TIPS + 1)]
    demo.make_tree(tree, names + extra, seed=SEED)
    return pam, tree, f"generated {species}-species PAM on {side}x{side} cells"


def per_core(job_dir: Path, out: Path, randomizations: int) -> float:
    """The baseline's wall time: `python -m bench.direct pam-stats` on the job's matched PAM and
    tree (so the matching itself is not in it), one process per core."""
    tested = [TESTED["site_stats"] + TESTED_WITH_TREE["site_stats"], TESTED["species_stats"]]
    command = [
        sys.executable, "-m", "bench.direct", "pam-stats",
        "--pam", str(job_dir / "outputs" / "matched_pam.lmm"),
        "--tree", str(job_dir / "outputs" / "matched_tree.nex"),
        "--tested", json.dumps(tested),
        "--randomizations", str(randomizations),
        "--seed", str(SEED), "--method", METHOD, "--alpha", str(ALPHA),
        "--processes", str(os.cpu_count()),
        "--out", str(out),
    ]  # fmt: skip
    # One core per process, as the service's rules get (the rule guard sets the same).
    threads = dict.fromkeys(("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"), "1")
    start = time.monotonic()
    done = subprocess.run(
        command, cwd=ROOT, env={**os.environ, **threads}, capture_output=True, text=True
    )
    elapsed = time.monotonic() - start
    if done.returncode != 0:
        raise RuntimeError(f"B9 baseline failed: {done.stderr[-2000:]}")
    return elapsed


def identical(left: Path, right: Path) -> bool:
    from lmpy import Matrix  # heavy (GDAL): only when B9 runs

    a, b = Matrix.load(str(left)), Matrix.load(str(right))
    return a.get_headers() == b.get_headers() and np.array_equal(
        np.asarray(a), np.asarray(b), equal_nan=True
    )


def phases(job: dict, tasks: list[dict]) -> dict:
    """Where the service's time went: before the first chunk, the chunks, after the last."""
    chunks = [t for t in tasks if "chunk_stats.py" in t["command"] and t["started_at"]]
    if not chunks:
        return {}
    first = min(t["started_at"] for t in chunks)
    last = max(t["finished_at"] for t in chunks)
    busy = sum(seconds_between(t["started_at"], t["finished_at"]) for t in chunks)
    return {
        "submit_to_first_chunk_s": seconds_between(job["submitted_at"], first),
        "chunks_wall_s": seconds_between(first, last),
        "chunks_busy_s": busy,
        "chunks": len(chunks),
        "last_chunk_to_complete_s": seconds_between(last, job["finished_at"]),
    }


def submit(bench, inputs: dict, randomizations: int) -> dict:
    job = bench.api.submit(
        {
            "workflow": "pam-stats",
            "name": f"b9: {randomizations} randomizations",
            "inputs": inputs,
            "params": {
                "randomizations": randomizations,
                "seed": SEED,
                "p_value_method": METHOD,
                "alpha": ALPHA,
            },
        }
    )
    return bench.api.wait(job["id"], timeout=6 * 3600, interval=1)


def b9_heuchera(bench) -> list[Row]:
    """The baseline runs before and after the service, on the matched PAM and tree of a job
    with no randomizations, and the service is compared with their mean: the machine is
    shared, and its load drifts over a run of many minutes."""
    sizes = bench.sizes
    randomizations = sizes.b9_randomizations
    bench.stack.start_workers(max_workers=WORKERS)
    data = bench.folder("b9-heuchera")
    data.mkdir()
    pam_file, tree_file, source = inputs(data, sizes.b9_species, sizes.b9_side)
    uploads = {
        "pam": bench.api.upload(pam_file, "b9 pam")["id"],
        "tree": bench.api.upload(tree_file, "b9 tree")["id"],
    }
    matched = bench.job_dir(submit(bench, uploads, 0))
    baselines = [per_core(matched, bench.folder("b9-per-core"), randomizations)]
    bench.say(f"B9: per core (before) {baselines[0]:.1f} s")
    job = submit(bench, uploads, randomizations)
    service = service_seconds(job)
    split = phases(job, bench.api.tasks(job["id"]))
    bench.say(f"B9: service {service:.1f} s {split}")
    job_dir = bench.job_dir(job)
    out = bench.folder("b9-per-core")
    baselines.append(per_core(job_dir, out, randomizations))
    baseline = sum(baselines) / len(baselines)
    same = all(identical(job_dir / "outputs" / name, out / name) for name in COMPARED)
    ratio = service / baseline
    bench.say(
        f"B9: per core (after) {baselines[1]:.1f} s, ratio {ratio:.3f} to the mean, "
        f"identical p-values {same}"
    )
    return [
        Row(
            "B9",
            f"pam-stats, {randomizations} randomizations (seed {SEED}) of the {source} with its "
            f"tree ({job['progress']['total']} rules, {WORKERS} slots), submit to COMPLETE",
            f"{service:.1f} s",
            f"same library calls in {os.cpu_count()} processes {baselines[0]:.1f} s before, "
            f"{baselines[1]:.1f} s after; p-values " + ("identical" if same else "**differ**"),
            f"{ratio:.3f}",
            "<= 1.05, identical p-values",
            ratio <= 1.05 and same,
            {
                "service_s": service,
                "per_core_s": baselines,
                "identical": same,
                "rules": job["progress"]["total"],
                "processes": os.cpu_count(),
                "randomizations": randomizations,
                "source": source,
                **split,
            },
        )
    ]
