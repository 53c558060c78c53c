"""The baselines: the service's own workflow files run by hand, without lmweb.

`makeflow -T wq` started as a user would, with its Work Queue workers pointed at it; a
workflow's commands run one after another in a shell, with no makeflow at all; and pam-stats'
null model as lmpy's library calls in one process per core (`python -m bench.direct pam-stats`).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import multiprocessing
import shutil
import subprocess
import sys
import time
from copy import deepcopy
from pathlib import Path

import numpy as np

from jobs.cctools.makeflow import MAKEFLOW
from jobs.cctools.processes import stop_processes
from jobs.cctools.workers import start_worker


def dag_name(entry) -> str:
    """A makeflow JSON input or output: a path, or {"dag_name": path, "task_name": ...}."""
    return entry if isinstance(entry, str) else entry["dag_name"]


def job_rules(job_dir: Path) -> list[dict]:
    stages = json.loads((job_dir / "stages.json").read_text())["started"]
    rules = []
    for stage in stages:
        rules += json.loads((job_dir / f"{stage}.mf.json").read_text())["rules"]
    return rules


def copy_workflow(job_dir: Path, target: Path, dag: str = "main.mf.json") -> str:
    """The job's workflow file and the files no rule makes (its staged inputs) into `target`."""
    target.mkdir(parents=True)
    shutil.copy(job_dir / dag, target / dag)
    rules = json.loads((job_dir / dag).read_text())["rules"]
    made = {dag_name(out) for rule in rules for out in rule["outputs"]}
    for source in {dag_name(p) for rule in rules for p in rule["inputs"]} - made:
        if (job_dir / source).exists():
            (target / source).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(job_dir / source, target / source)
    return dag


def start_makeflow(folder: Path, dag: str, password_file: Path) -> tuple[subprocess.Popen, int]:
    """`makeflow -T wq` as typed by hand: no catalog, no project name, makeflow's defaults."""
    popen = subprocess.Popen(
        [MAKEFLOW, "--json", "-T", "wq", "-p", "0", "-Z", "port",
         f"--password={password_file}", dag],
        cwd=folder,
        stdin=subprocess.DEVNULL,
        stdout=(folder / "makeflow.out").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        try:
            return popen, int((folder / "port").read_text())
        except (OSError, ValueError):
            if popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"makeflow did not start in {folder}") from None
            time.sleep(0.01)


def start_workers(port: int, count: int, cores: int, password_file: Path, scratch: Path):
    return [
        start_worker(
            host="127.0.0.1",
            port=port,
            password_file=password_file,
            cores=cores,
            scratch_dir=scratch,
            idle_timeout=60,
            single_shot=True,
        )
        for _ in range(count)
    ]


def makeflow_wq(folders: list[Path], dag: str, *, workers: int, cores: int, password_file: Path):
    """Run each folder's DAG with `makeflow -T wq` and `workers` workers of its own, all at
    once; returns the wall time from the first launch to the last exit."""
    start = time.monotonic()
    runs = []
    for folder in folders:
        popen, port = start_makeflow(folder, dag, password_file)
        scratch = folder.parent / f"{folder.name}.scratch"
        runs.append((popen, start_workers(port, workers, cores, password_file, scratch)))
    for popen, _ in runs:
        code = popen.wait(timeout=3600)
        if code != 0:
            raise RuntimeError(f"makeflow by hand failed ({code}) in {folders}")
    elapsed = time.monotonic() - start
    for _, pool in runs:
        stop_processes(pool, grace=2)
    return elapsed


def serial(job_dir: Path, folder: Path) -> float:
    """The job's rule commands, one after another in one folder, with no makeflow."""
    rules = job_rules(job_dir)
    copy_workflow(job_dir, folder)
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "LANG": "C.UTF-8"}
    start = time.monotonic()
    for rule in rules:
        done = subprocess.run(
            ["/bin/sh", "-c", rule["command"]], cwd=folder, env=env, capture_output=True
        )
        if done.returncode != 0:
            raise RuntimeError(f"by hand: {rule['command'][:200]}: {done.stderr[-500:]!r}")
    return time.monotonic() - start


# -- pam-stats' randomizations with lmpy's library calls, one process per core (B9) ------------


def _pam_stats_counts(task: tuple) -> list:
    """One process's share: observed statistics, then randomized PAMs `numbers` (each drawn
    after numpy.random.seed([seed, n]), as pam-stats documents) and how many of their values
    exceed the observed ones (calculate_p_values' running count).

    The statistics are the rules' (pam_statistics: PamStats' values, vectorized), or with
    `lmpy_statistics` PamStats itself. Both agree to 1e-9, but not bit for bit: on an
    ultrametric tree many sites tie in exact arithmetic, and which side of a tie the rounding
    falls on changes a count. Identical p-values need the same arithmetic on both sides."""
    from lmpy.data_wrangling.factory import WranglerFactory
    from lmpy.matrix import Matrix
    from lmpy.randomize.grady import grady_randomize
    from lmpy.statistics.pam_stats import PamStats
    from lmpy.statistics.significance import PermutationTests
    from lmpy.tools.wrangle_matrix import wrangle_matrix
    from lmpy.tree import TreeWrapper

    from translators.pam_stats.scripts import pam_statistics

    pam_file, tree_file, tested, numbers, seed, lmpy_statistics = task
    pam = Matrix.load(pam_file)
    tree = TreeWrapper.from_filename(tree_file) if tree_file else None
    prepared = pam_statistics.prepare_tree(tree) if tree is not None else None
    factory = WranglerFactory(logger=None)
    keep = [
        factory.get_wranglers(
            [{"wrangler_type": "SubsetReorderSlicesWrangler", "axes": {"1": names}}]
        )
        for names in tested
    ]

    def statistics(matrix):
        if not lmpy_statistics:
            diversity, site, species = pam_statistics.statistics(matrix, prepared)
        else:
            with contextlib.redirect_stdout(io.StringIO()):
                stats = PamStats(matrix, tree=tree)
                diversity = stats.calculate_diversity_statistics()
                site = stats.calculate_site_statistics()
                species = stats.calculate_species_statistics()
        return [diversity, wrangle_matrix(site, keep[0])[0], wrangle_matrix(species, keep[1])[0]]

    observed = statistics(pam)
    tests = [PermutationTests(matrix) for matrix in observed]
    for number in numbers:
        np.random.seed([seed, number])
        for test, matrix in zip(tests, statistics(grady_randomize(deepcopy(pam))), strict=True):
            test.add_permutation(matrix)
    return [
        (np.asarray(test.f_counts), matrix.get_headers())
        for test, matrix in zip(tests, observed, strict=True)
    ]


def pam_stats_per_core(
    pam: Path,
    tree: Path | None,
    tested: tuple[list[str], list[str]],
    randomizations: int,
    seed: int,
    method: str,
    alpha: float,
    out: Path,
    processes: int,
    lmpy_statistics: bool = False,
) -> None:
    """pam-stats' null model by hand: `processes` processes share the randomizations, then the
    parent turns the summed counts into p-values and significance (calculate_p_values' calls)."""
    from lmpy.matrix import Matrix
    from lmpy.statistics.significance import SignificanceMethod, get_significant_values

    numbers = list(range(1, randomizations + 1))
    shares = [numbers[i::processes] for i in range(processes)]
    tasks = [
        (str(pam), tree and str(tree), tested, share, seed, lmpy_statistics)
        for share in shares
        if share
    ]
    # fork: the children start from this small process and import lmpy themselves.
    with multiprocessing.get_context("fork").Pool(len(tasks)) as pool:
        results = pool.map(_pam_stats_counts, tasks)
    out.mkdir(parents=True, exist_ok=True)
    sig_method = {
        "raw": SignificanceMethod.RAW,
        "fdr": SignificanceMethod.FDR,
        "bonferroni": SignificanceMethod.BONFERRONI,
    }[method]
    for index, key in enumerate(("diversity", "site_stats", "species_stats")):
        total = np.sum([result[index][0] for result in results], axis=0)
        p_values = Matrix(total / randomizations, headers=results[0][index][1])
        p_values.write(str(out / f"p_values_{key}.lmm"))
        if key != "diversity":
            significance = get_significant_values(p_values, alpha, sig_method)
            significance.write(str(out / f"significant_{key}.lmm"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="pam-stats' null model, one process per core")
    parser.add_argument("command", choices=["pam-stats"])
    parser.add_argument("--pam", type=Path, required=True)
    parser.add_argument("--tree", type=Path)
    parser.add_argument("--tested", required=True, help="JSON: [site names, species names]")
    parser.add_argument("--randomizations", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--method", default="fdr")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--processes", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--lmpy-statistics",
        action="store_true",
        help="lmpy's PamStats instead of the rules' statistics (same values to 1e-9, slower)",
    )
    args = parser.parse_args(argv)
    pam_stats_per_core(
        args.pam,
        args.tree,
        tuple(json.loads(args.tested)),
        args.randomizations,
        args.seed,
        args.method,
        args.alpha,
        args.out,
        args.processes,
        args.lmpy_statistics,
    )


if __name__ == "__main__":
    main()
