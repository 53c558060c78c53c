"""The inspection subprocess: caps its own memory, then answers a JSON request a line a check.

Run by jobs.inspection.run_isolated as `python -m jobs.inspect_worker`, request on stdin:
{"limits": {...Limits}, "checks": [{"content": "pam", "path": "/...", "params": {}}, ...]};
one JSON line on stdout per check, in order: {"facts": {...}} or {"error": "why, for the user"}.
It imports no Django and gets no secrets in its environment.
"""

import json
import resource
import sys

from osgeo import gdal

from jobs.inspection import GDAL_OPTIONS, Check, Limits, run_check


def limit_resources(limits: Limits) -> None:
    """Cap this process before it reads any input: address space (numpy, GDAL and dendropy all
    allocate through it), CPU time as a backstop to the parent's timeout, no core files."""
    memory = limits.inspection_memory_bytes
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    seconds = limits.inspection_seconds + 2
    resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # Temporary copies (a PAM's data.npz) are bounded like an archive's contents.
    size = limits.zip_unpacked_bytes
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))


def main() -> int:
    request = json.loads(sys.stdin.buffer.read())
    limits = Limits(**request["limits"])
    limit_resources(limits)
    for name, value in GDAL_OPTIONS.items():
        gdal.SetConfigOption(name, value)
    for item in request["checks"]:
        outcome = run_check(Check(**item), limits)
        answer = {"error": outcome.error} if outcome.error else {"facts": outcome.facts}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()  # the parent reads the answers so far if a later check times out
    return 0


if __name__ == "__main__":
    sys.exit(main())
