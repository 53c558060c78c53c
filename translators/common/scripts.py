"""Worker scripts: real modules in each workflow's `scripts` package, shipped into stages as text.

They run on workers as `python3 SCRIPT`, isolated from this project: a script imports only the
standard library and what the workers have (lmpy, numpy, GDAL...), never `translators`.
"""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def script_text(package: str, name: str) -> str:
    """The text of `name` in the `scripts` package beside the workflow package `package`."""
    return resources.files(f"{package}.scripts").joinpath(name).read_text(encoding="utf-8")
