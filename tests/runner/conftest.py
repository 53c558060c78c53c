"""Real CCTools processes for the runner tests: a private catalog, a password, workers."""

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.cctools.makeflow import MakeflowRun, prepare_resume, start_makeflow
from jobs.cctools.processes import stop_process
from jobs.cctools.projects import project_name, project_regex
from jobs.cctools.workers import WorkerSpec, start_factory
from tests.support.ports import free_port  # noqa: F401 (the runner tests import it from here)
from tests.support.waiting import wait_until  # noqa: F401 (the runner tests import it from here)


def write_dag(workdir: Path, rules: list[dict], name: str = "test.mf.json") -> str:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / name).write_text(json.dumps({"rules": rules}, indent=1))
    return name


def logged_rule(rule_id: str, script: str, outputs: list[str], inputs=()) -> dict:
    """A rule as the translators write them: output and error into logs/<id>.*, declared."""
    out, err = f"logs/{rule_id}.stdout", f"logs/{rule_id}.stderr"
    return {
        "command": f"mkdir -p logs && {{ {script} ; }} > {out} 2> {err}",
        "inputs": list(inputs),
        "outputs": [*outputs, out, err],
    }


@pytest.fixture(autouse=True)
def _fast_passwords():
    # Overrides tests/conftest.py's Django-only autouse fixture: these tests need no Django.
    return None


@pytest.fixture(scope="session")
def password_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("secret") / "wq.password"
    path.write_text(secrets.token_hex(16) + "\n")
    path.chmod(0o600)
    return path


class Processes:
    """Everything a test starts, stopped in the fixture's finalizer even when the test fails."""

    def __init__(self, root: Path, catalog: str, password_file: Path) -> None:
        self.root = root
        self.catalog = catalog
        self.password_file = password_file
        self.runs: list[MakeflowRun] = []
        self.popens = []
        self._count = 0

    def project(self) -> str:
        self._count += 1
        return project_name("test", f"{secrets.token_hex(4)}-{self._count}")

    def start(self, workdir: Path, dag: str, *, retry_count: int = 0, **options):
        prepare_resume(workdir, dag)
        options.setdefault("project", self.project())
        run = start_makeflow(
            workdir=workdir,
            dag=dag,
            catalog=self.catalog,
            password_file=self.password_file,
            tmpdir=workdir / "tmp",
            retry_count=retry_count,
            **options,
        )
        self.runs.append(run)
        return run

    def spec(self, **options) -> WorkerSpec:
        options.setdefault("password_file", self.password_file)
        options.setdefault("scratch_dir", self.root / "scratch")
        options.setdefault("idle_timeout", 30)
        return WorkerSpec(**options)

    def factory(self, deployment: str, folder: Path, **options):
        """A work_queue_factory for the managers of `deployment` (one to two one-core workers
        unless `options` say otherwise), its scratch folder and log in `folder`."""
        options = {"min_workers": 1, "max_workers": 2, "cores_per_worker": 1, **options}
        return self.track(
            start_factory(
                catalog=self.catalog,
                project_regex=project_regex(deployment),
                password_file=self.password_file,
                scratch_dir=folder / "factory",
                log_path=folder / "factory.log",
                **options,
            )
        )

    def track(self, popen):
        self.popens.append(popen)
        return popen

    def stop_all(self) -> None:
        for run in self.runs:
            run.stop(grace=2)
            run.cleanup_tmp()
        for popen in self.popens:
            stop_process(popen, grace=1)


@pytest.fixture
def procs(tmp_path, catalog, password_file) -> Iterator[Processes]:
    processes = Processes(tmp_path, catalog, password_file)
    try:
        yield processes
    finally:
        processes.stop_all()


@pytest.fixture
def workdir(tmp_path) -> Path:
    path = tmp_path / "job"
    path.mkdir()
    return path
