"""Tool versions, read once when the process starts: no request starts a process to learn them."""

import importlib.metadata
import platform

import lmweb

from .cctools import makeflow

_versions: dict[str, str] = {}


def read_versions() -> dict[str, str]:
    versions = {"lmweb": lmweb.__version__, "python": platform.python_version()}
    for package in ("specify-lmpy", "numpy", "GDAL", "DendroPy"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    versions["cctools"] = makeflow.version()
    return versions


def load() -> None:
    """Read the versions now (lmweb/wsgi.py: once per web process, before any request)."""
    _versions.clear()
    _versions.update(read_versions())


def tool_versions() -> dict[str, str]:
    if not _versions:
        load()  # a process that skipped ready() (a bare script): read them on first use
    return dict(_versions)
