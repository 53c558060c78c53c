"""Golden-file fixture for translator tests; LMWEB_UPDATE_GOLDEN=1 rewrites the files."""

import os
from pathlib import Path

import pytest

GOLDEN_DIR = Path(__file__).parent / "golden"


@pytest.fixture
def golden():
    """Compare text with golden/<name>, or write it there when LMWEB_UPDATE_GOLDEN=1."""

    def check(name: str, text: str) -> None:
        path = GOLDEN_DIR / name
        if os.environ.get("LMWEB_UPDATE_GOLDEN") == "1":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            return
        assert path.exists(), f"missing golden file {path}; run with LMWEB_UPDATE_GOLDEN=1"
        expected = path.read_text(encoding="utf-8")
        assert text == expected, f"{name} differs from its golden file (LMWEB_UPDATE_GOLDEN=1)"

    return check


UUIDS = {
    "pam": "00000000-0000-0000-0000-000000000001",
    "tree": "00000000-0000-0000-0000-000000000002",
}


class Case:
    """A request and its staged inputs; the golden files are named after `name`."""

    def __init__(self, name: str, workflow: str, params: dict, staged: dict):
        self.name, self.workflow, self.params, self.staged = name, workflow, params, staged

    def request(self) -> dict:
        request = {"workflow": self.workflow, "name": self.name, "params": dict(self.params)}
        if self.staged:
            request["inputs"] = {key: UUIDS[key] for key in self.staged}
        return request

    def stage(self):
        import translators

        return translators.get(self.workflow).plan(self.request(), dict(self.staged), [])


PAM = {"pam": "inputs/pam.lmm"}
CASES = {
    case.name: case
    for case in (
        Case("selftest-defaults", "selftest", {}, {}),
        Case("selftest-3-tasks-half-second", "selftest", {"tasks": 3, "seconds": 0.5}, {}),
        Case("pam-stats-observed-only", "pam-stats", {"randomizations": 0}, PAM),
        Case("pam-stats-45-fdr", "pam-stats", {"randomizations": 45}, PAM),
        Case("pam-stats-csv-2", "pam-stats", {"randomizations": 2}, {"pam": "inputs/pam.csv"}),
        Case(
            "pam-stats-nexus-25-bonferroni",
            "pam-stats",
            {"randomizations": 25, "p_value_method": "bonferroni", "alpha": 0.01},
            {**PAM, "tree": "inputs/tree.nex"},
        ),
        Case(
            "pam-stats-newick-3-raw",
            "pam-stats",
            {"randomizations": 3, "p_value_method": "raw", "seed": 42},
            {**PAM, "tree": "inputs/tree.tre"},
        ),
        Case(
            "pam-stats-nexus-observed-only",
            "pam-stats",
            {"randomizations": 0},
            {**PAM, "tree": "inputs/tree.nex"},
        ),
    )
}


def pytest_generate_tests(metafunc):
    if "case" in metafunc.fixturenames:
        metafunc.parametrize("case", list(CASES.values()), ids=list(CASES))


@pytest.fixture
def cases() -> dict:
    return CASES


@pytest.fixture
def golden_dir() -> Path:
    return GOLDEN_DIR


@pytest.fixture(autouse=True)
def _fast_passwords():
    # Overrides tests/conftest.py's autouse fixture of this name, which needs pytest-django's
    # `settings`: translator tests must run without Django (`-p no:django`).
    return None
