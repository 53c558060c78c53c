"""A stage run by hand: its files written, then each rule's command in order, as a worker would
(no makeflow, no Work Queue): for tests of what the rules make."""

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def tool_path_env() -> dict:
    """The rules' environment: lmpy's tools and the virtualenv's python3 first on PATH."""
    return {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "LANG": "C.UTF-8"}


def demo_inputs(folder: Path, species: int = 12, side: int = 8, seed: int = 3) -> None:
    """inputs/pam.lmm and inputs/tree.tre as the demo makes them."""
    spec = importlib.util.spec_from_file_location("demo", ROOT / "scripts" / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    (folder / "inputs").mkdir(parents=True)
    names = demo.make_pam(folder / "inputs" / "pam.lmm", species=species, side=side, seed=seed)
    demo.make_tree(folder / "inputs" / "tree.tre", names, seed=seed)


def write_files(stage, folder: Path) -> None:
    """The stage's own files (scripts, configuration) in `folder`."""
    for name, text in stage.files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)


def run_stage(stage, folder: Path, *, report: bool = True) -> None:
    """Every rule's command, in order, in `folder` (which holds the staged inputs); without the
    report rule when `report` is false (for a test of what the other rules make)."""
    from translators.report import REPORT

    write_files(stage, folder)
    for rule in stage.makeflow["rules"]:
        if not report and REPORT in rule["outputs"]:
            continue
        done = subprocess.run(
            ["/bin/sh", "-c", rule["command"]], cwd=folder, env=tool_path_env(), check=False
        )
        logs = sorted((folder / "logs").glob("*.stderr"))
        assert done.returncode == 0, [p.read_text()[-1500:] for p in logs]


# Runs its arguments and prints their CPU seconds and peak resident KB: a process that runs
# nothing else, so the figures are the rule's own.
MEASURED = (
    "import resource, subprocess, sys; done = subprocess.run(sys.argv[1:]); "
    "use = resource.getrusage(resource.RUSAGE_CHILDREN); "
    "print(use.ru_utime + use.ru_stime, use.ru_maxrss); sys.exit(done.returncode)"
)


def run_measured(rule, folder: Path) -> tuple[float, float, float]:
    """Run one rendered rule alone in `folder`; (wall seconds, CPU seconds, peak resident MB)."""
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", MEASURED, "/bin/sh", "-c", rule["command"]],
        cwd=folder,
        env=tool_path_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.monotonic() - start
    logs = sorted((folder / "logs").glob("*.stderr"))
    assert done.returncode == 0, [p.read_text()[-1500:] for p in logs]
    cpu, peak = (float(v) for v in done.stdout.split())
    return seconds, cpu, peak / 1024


def produced(stage, folder: Path) -> list[str]:
    """The stage's declared outputs that exist, folders expanded (as the controller lists them)."""
    files = set()
    for rule in stage.makeflow["rules"]:
        for name in rule["outputs"]:
            name = name if isinstance(name, str) else name["dag_name"]
            path = folder / name
            if path.is_dir():
                files |= {p.relative_to(folder).as_posix() for p in path.rglob("*") if p.is_file()}
            elif path.is_file():
                files.add(name)
    return sorted(files)
