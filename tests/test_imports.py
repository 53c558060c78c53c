"""The jobs app has no import circle to hide: no module imports our own code inside a function,
and each one imports on its own in a fresh interpreter."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
JOBS = ROOT / "jobs"
OWN_PACKAGES = ("jobs", "lmweb", "translators")
# The modules that once imported each other in a circle (through function-local imports), and
# the ones that read or drive them. A circle shows when one of them is imported first.
LIFECYCLE_MODULES = [
    "jobs.models",
    "jobs.services",
    "jobs.dispatch",
    "jobs.rules",
    "jobs.execution.controller",
    "jobs.execution.folder",
    "jobs.execution.packaging",
    "jobs.tasks",
    "jobs.admin",
    "jobs.ops",
    "jobs.api.views",
]


def local_imports_of_own_code(path: Path) -> list[str]:
    """`file:line` of every import of our own code made inside a function body."""
    found = []
    for function in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(function):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if node.level == 0 else []
                relative = node.level > 0
            elif isinstance(node, ast.Import):
                names, relative = [alias.name for alias in node.names], False
            else:
                continue
            if relative or any(name.split(".")[0] in OWN_PACKAGES for name in names):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_no_jobs_module_imports_our_own_code_inside_a_function():
    # The app config's ready() registers the checks: the one import Django wants made late.
    allowed = {"jobs/apps.py"}
    found = [
        where
        for path in sorted(JOBS.rglob("*.py"))
        if "sandbox" not in path.parts
        for where in local_imports_of_own_code(path)
        if where.split(":")[0] not in allowed
    ]
    assert found == []


def test_the_checker_finds_a_function_local_import(tmp_path):
    sample = ROOT / "jobs" / "_sample_for_test.py"
    sample.write_text("def f():\n    from .services import job_submit\n    import jobs.models\n")
    try:
        assert local_imports_of_own_code(sample) == [
            "jobs/_sample_for_test.py:2",
            "jobs/_sample_for_test.py:3",
        ]
    finally:
        sample.unlink()


@pytest.mark.parametrize("module", LIFECYCLE_MODULES)
def test_each_jobs_module_imports_first_in_a_fresh_interpreter(module):
    code = f"import django; django.setup(); import {module}"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "lmweb.settings"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]


def circles(graph) -> list[tuple[str, str]]:
    """Every pair of our modules where one imports the other and the other leads back to it."""
    found = []
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            if imported.split(".")[0] not in OWN_PACKAGES or imported == importer:
                continue
            if graph.chain_exists(importer=imported, imported=importer):
                found.append((importer, imported))
    return found


def test_our_packages_have_no_import_circle():
    graph = grimp.build_graph(*OWN_PACKAGES)
    assert circles(graph) == []


def test_the_circle_check_finds_a_circle_through_a_third_module():
    graph = grimp.ImportGraph()
    for module in ("jobs.a", "jobs.b", "jobs.c"):
        graph.add_module(module)
    graph.add_import(importer="jobs.a", imported="jobs.b")
    graph.add_import(importer="jobs.b", imported="jobs.c")
    assert circles(graph) == []
    graph.add_import(importer="jobs.c", imported="jobs.a")
    assert circles(graph) == [("jobs.a", "jobs.b"), ("jobs.b", "jobs.c"), ("jobs.c", "jobs.a")]
