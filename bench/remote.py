"""B12: another machine joins with lmweb-worker. The machine is a network namespace joined to
this one by a veth pair (its own addresses, loopback and routes; the same files), made here with
`ip netns` and deleted after; the catalog it reads holds the records of killed makeflows."""

from __future__ import annotations

import contextlib
import secrets
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from jobs.cctools.catalog import query_catalog, start_catalog_server, wait_for_catalog
from jobs.cctools.makeflow import start_makeflow
from jobs.cctools.processes import send_signal, stop_process
from jobs.cctools.projects import project_name, project_regex
from tests.support.ports import free_port

from .client import service_seconds
from .stack import ROOT

IP = "/usr/sbin/ip"


def _ip(*args: str) -> None:
    subprocess.run([IP, *args], check=True, capture_output=True, timeout=30)


class WorkerHost:
    """A network namespace at `address`, this machine at `gateway` (a /30 of 10.213.0.0/16)."""

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.name = f"lmwb{tag}"
        third, fourth = secrets.randbelow(256), 4 * secrets.randbelow(64)
        self.gateway = f"10.213.{third}.{fourth + 1}"
        self.address = f"10.213.{third}.{fourth + 2}"
        self._outer, self._inner = f"lmwb{tag}h", f"lmwb{tag}n"

    def __enter__(self) -> WorkerHost:
        _ip("netns", "add", self.name)
        try:
            _ip("link", "add", self._outer, "type", "veth", "peer", "name", self._inner,
                "netns", self.name)  # fmt: skip
            _ip("addr", "add", f"{self.gateway}/30", "dev", self._outer)
            _ip("link", "set", self._outer, "up")
            _ip("-n", self.name, "addr", "add", f"{self.address}/30", "dev", self._inner)
            _ip("-n", self.name, "link", "set", self._inner, "up")
            _ip("-n", self.name, "link", "set", "lo", "up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_) -> None:
        # Deleting the namespace deletes its end of the pair, and so the pair.
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("netns", "delete", self.name)
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("link", "delete", self._outer)

    def start(self, args: list[str], log_path: Path) -> subprocess.Popen:
        """A command on the worker host, in a session of its own (stop_process sweeps it)."""
        with log_path.open("ab") as log:
            return subprocess.Popen(
                [IP, "netns", "exec", self.name, *args],
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )


def dead_managers(catalog: str, deployment: str, password_file: Path, root: Path, count: int):
    """`count` makeflows of the deployment, killed -9 once the catalog lists them: records that
    stay for the catalog's lifetime, at ports that no longer answer."""
    runs = []
    for number in range(count):
        folder = root / f"dead{number}"
        folder.mkdir(parents=True)
        (folder / "dead.mf.json").write_text(
            '{"rules": [{"command": "sleep 600", "inputs": [], "outputs": []}]}'
        )
        runs.append(
            start_makeflow(
                workdir=folder, dag="dead.mf.json", catalog=catalog, password_file=password_file,
                project=project_name(deployment, f"dead{number}", 1), tmpdir=folder / "tmp",
                retry_count=0,
            )
        )  # fmt: skip
    projects = {run.project for run in runs}
    deadline = time.monotonic() + 60
    while not projects <= {str(r.get("project")) for r in query_catalog(catalog)}:
        if time.monotonic() > deadline:
            raise RuntimeError("the dead managers' records never reached the catalog")
        time.sleep(0.1)
    for run in runs:
        if run.makeflow is not None:
            send_signal(run.makeflow, signal.SIGKILL)
    for run in runs:
        run.popen.wait(timeout=30)
        run.cleanup_tmp()
    return projects


def _first_rule_after_makeflow_start(job_dir: Path, tasks: list[dict]) -> float:
    """Seconds from the job's first makeflow start (its log's `# STARTED`, in microseconds)
    to its first rule running."""
    starts = []
    for log in job_dir.glob("*.makeflowlog"):
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("# STARTED "):
                starts.append(int(line.split()[2]) / 1e6)
    first = min(
        datetime.fromisoformat(task["started_at"]).timestamp()
        for task in tasks
        if task["started_at"]
    )
    return first - min(starts)


@contextlib.contextmanager
def _running(popen: subprocess.Popen) -> Iterator[subprocess.Popen]:
    try:
        yield popen
    finally:
        stop_process(popen, grace=10)


def b12_worker_host(bench) -> list:
    from .measures import Row

    sizes, stack, api = bench.sizes, bench.stack, bench.api
    jobs, rules, seconds = sizes.b12_jobs, sizes.b12_rules, sizes.b12_seconds
    root = stack.root / "b9"
    root.mkdir()
    saved_catalog = stack.environment["LMWEB_CATALOG"]

    def serve(count: int, label: str, timeout: float) -> tuple[float, list[float]]:
        total, firsts = 0.0, []
        for number in range(count):
            job = api.selftest(rules, seconds, name=f"b9-{label}-{number}")
            job = api.wait(job["id"], timeout=timeout, interval=0.05)
            total += service_seconds(job)
            firsts.append(
                _first_rule_after_makeflow_start(bench.job_dir(job), api.tasks(job["id"]))
            )
        bench.say(f"B12 {label}: {count} job(s) {total:.1f} s, first rules {firsts}")
        return total, firsts

    with WorkerHost() as host:
        port = free_port()
        catalog_popen = start_catalog_server(
            port=port, host=host.gateway, history_dir=root / "catalog",
            log_path=root / "catalog.log",
        )  # fmt: skip
        catalog = f"{host.gateway}:{port}"
        try:
            wait_for_catalog(catalog)
            dead = dead_managers(
                catalog, stack.deployment, stack.password_file, root / "dead", sizes.b12_dead
            )
            # The controllers advertise their makeflows there: the record's address is then
            # one the worker host reaches.
            stack.stop("workers")
            stack.stop("controller")
            stack.environment["LMWEB_CATALOG"] = catalog
            stack.start_controller()
            stack.start_workers(max_workers=rules)
            api.wait(api.selftest(1, 0, name="b9-warm-up")["id"], timeout=300)
            local, _ = serve(jobs, "local workers", 300)
            stack.stop("workers")
            agent = host.start(
                [sys.executable, "-m", "jobs.cctools.agent", "--catalog", catalog,
                 "--password-file", str(stack.password_file), "--deployment", stack.deployment,
                 "--cores", str(rules), "--memory", str(256 * rules),
                 "--scratch-dir", str(root / "agent")],
                root / "agent.log",
            )  # fmt: skip
            with _running(agent):
                remote, firsts = serve(jobs, "lmweb-worker", 300)
            by_factory, factory_firsts = 0.0, []
            if sizes.b12_factory_jobs:
                factory = host.start(
                    ["/usr/bin/work_queue_factory", "-T", "local", "--catalog", catalog,
                     "-M", project_regex(stack.deployment), "-P", str(stack.password_file),
                     "-w", "0", "-W", "8", "-S", str(root / "factory")],
                    root / "factory.log",
                )  # fmt: skip
                with _running(factory):
                    by_factory, factory_firsts = serve(sizes.b12_factory_jobs, "factory", 600)
            still_dead = len(dead & {str(r.get("project")) for r in query_catalog(catalog)})
        finally:
            stop_process(catalog_popen, grace=2)
            stack.stop("controller")
            stack.environment["LMWEB_CATALOG"] = saved_catalog
            stack.start_controller()
    worst = max(firsts)
    ratio = remote / local
    return [
        Row(
            "B12",
            f"worker host in its own network namespace, lmweb-worker: {jobs} jobs of {rules} x "
            f"{seconds:g} s rules one after another, {still_dead} dead managers in the catalog "
            "(makeflow start to first rule, median / max; sum of submit to COMPLETE)",
            f"{statistics.median(firsts):.2f} / {worst:.2f} s; {remote:.1f} s",
            f"local workers {local:.1f} s; "
            + (
                f"README's work_queue_factory on the host: {factory_firsts[0]:.1f} s to first "
                f"rule, {by_factory:.1f} s for {len(factory_firsts)} job(s)"
                if factory_firsts
                else "work_queue_factory not run at this size (minutes a job)"
            ),
            f"x{ratio:.2f} of local",
            "first rule <= 2 s; <= 1.2x local",
            worst <= 2 and ratio <= 1.2,
            {
                "first_rule_s": firsts,
                "lmweb_worker_s": remote,
                "local_s": local,
                "factory_first_rule_s": factory_firsts,
                "factory_s": by_factory,
                "dead_records": still_dead,
            },
        )
    ]
