"""What runs on the workers around every rule: the guard (limits, sandbox) and GDAL's fence.

The controller writes these files into each job folder and makeflow ships them with every rule
(``--wrapper-input``) and wraps every rule's command with the guard (``--wrapper``).
"""

from functools import cache
from pathlib import Path

GUARD = ".lmweb/guard.py"
FENCE = ".lmweb/fence/sitecustomize.py"
_HERE = Path(__file__).resolve().parent


@cache
def files() -> dict[str, str]:
    """Job-folder path -> text of each file the guard needs on the worker."""
    return {
        GUARD: (_HERE / "guard.py").read_text(),
        FENCE: (_HERE / "fence" / "sitecustomize.py").read_text(),
    }


def write_files(folder: Path) -> None:
    """Write the guard's files into a job folder (only what changed: makeflow reruns a rule
    whose inputs look newer than its outputs)."""
    for relative, text in files().items():
        path = Path(folder) / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)


def makeflow_arguments(seconds: int) -> list[str]:
    """makeflow's options that run every rule through the guard, for at most `seconds`."""
    # -I -S: no site-packages, no user environment: the guard needs only the standard library,
    # and its start-up is paid by every rule.
    wrapper = f"python3 -I -S {GUARD} --seconds {int(seconds)} []"
    return ["--wrapper", wrapper, "--wrapper-input", GUARD, "--wrapper-input", FENCE]
