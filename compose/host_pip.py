"""pip's configuration on the building machine, for pip inside `podman build`.

Writes DIR/pip.conf from `pip config list` (files and PIP_* variables) with every local path it
names (file:// indexes, find-links, constraints, CA bundle) moved under /run/host-pip/, and prints
the `--volume` options that bind those paths there, read-only, one a line. Nothing about this
machine goes into the repository or the image: the build reads it at run time.
Usage: python3 compose/host_pip.py PIP DIR
"""

import subprocess
import sys
from pathlib import Path

MOUNT = "/run/host-pip"
# The options that decide where packages come from; the rest stay pip's defaults.
KEYS = {
    "index-url", "extra-index-url", "find-links", "constraint", "cert", "client-cert",
    "trusted-host", "no-index", "default-timeout", "proxy", "retries",
}  # fmt: skip


def main(pip: str, out: Path) -> None:
    listed = subprocess.run([pip, "config", "list"], capture_output=True, text=True, check=True)
    options: dict[str, str] = {}
    for line in listed.stdout.splitlines():
        scope_key, _, value = line.partition("=")
        key = scope_key.rpartition(".")[2]
        if key in KEYS:
            options[key] = value.strip().strip("'\"")  # later scopes (PIP_* variables) win
    mounts: dict[str, str] = {}

    def moved(token: str) -> str:
        scheme = "file://" if token.startswith("file://") else ""
        path = Path(token.removeprefix("file://"))
        if not path.is_absolute() or not path.exists():
            return token
        # A local index's pages link to ../../files/...: bind the folder that holds simple/.
        root, below = (path.parent, path.name) if scheme and path.name == "simple" else (path, "")
        key = str(root)
        if key not in mounts:
            target = f"{MOUNT}/{len(mounts)}"
            mounts[key] = target if root.is_dir() else f"{target}/{root.name}"
        return scheme + mounts[key] + (f"/{below}" if below else "")

    lines = ["[global]"]
    for key, value in options.items():
        lines.append(f"{key} = {' '.join(moved(token) for token in value.split())}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "pip.conf").write_text("\n".join(lines) + "\n")
    print(f"--volume={out / 'pip.conf'}:{MOUNT}/pip.conf:ro")
    for source, target in mounts.items():
        print(f"--volume={source}:{target}:ro")


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
