"""Every workflow's example request, submitted as given on the sample data, reaches COMPLETE,
and its deterministic outputs equal those of the same commands run by hand."""

import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import translators
from bench.direct import dag_name as _name
from bench.direct import job_rules as load_rules
from tests import synthetic
from tests.conftest import upload
from tests.support.crates import read_with_ro_crate_py, validate

from .conftest import wait_until_finished
from .test_execution import submit

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def sample_uploads(name: str) -> dict[str, tuple[str, bytes]]:
    """The example's own files from the sample data: placeholder id -> (file name, content)."""
    folder = synthetic.sample_data()
    files = {}
    for placeholder, relative in translators.get(name).example_data.items():
        path = folder / relative
        if path.is_dir():  # a folder of shapefiles is uploaded as a zip, as a user would
            files[placeholder] = (path.name + ".zip", synthetic.folder_zip(path))
        else:
            files[placeholder] = (path.name, path.read_bytes())
    return files


def submit_example(client, name: str, files: dict[str, tuple[str, bytes]]) -> str:
    """The example request as given, its placeholder ids replaced by uploads of `files`."""
    workflow = translators.get(name)
    assert workflow.example_data, f"{name} names no sample data for its example"
    assert set(files) == set(workflow.example_data), name
    text = json.dumps(workflow.example)
    for placeholder, (filename, content) in files.items():
        response = upload(client, filename, content)
        assert response.status_code == 201, response.content
        text = text.replace(placeholder, response.json()["id"])
    return submit(client, json.loads(text))["id"]


# Outputs that do not depend on randomization, per workflow (checked against a run by hand).
DETERMINISTIC = {
    "pam-stats": [
        "outputs/observed_diversity.lmm",
        "outputs/observed_site_stats.lmm",
        "outputs/observed_species_stats.lmm",
        "outputs/matched_pam.lmm",
        # The example gives a seed: its randomized PAMs, so its p-values, are reproducible.
        "outputs/p_values_*.lmm",
        "outputs/significant_*.lmm",
    ],
    # Two species' files: the split and their own cleaning rules (not all 60).
    "occurrence-cleaning": ["outputs/species/*.csv"],
    "species-pam": ["outputs/pam.lmm", "outputs/site_stats.lmm", "outputs/species_stats.lmm"],
    # F-values are exact; the semi-partial signs depend on encode_tree_mcpa's unseeded draws.
    "mcpa": ["outputs/mcpa_f_values.lmm", "outputs/environment.lmm", "outputs/biogeography.lmm"],
}


def rules_for(rules: list[dict], targets: list[str]) -> list[dict]:
    """The rules (in stage and file order) that make `targets`, with all they depend on."""
    maker = {_name(out): i for i, rule in enumerate(rules) for out in rule["outputs"]}
    needed, pending = set(), list(targets)
    while pending:
        path = pending.pop()
        index = maker.get(path)
        if index is None:
            # A file inside a folder output: the rule making the folder.
            index = next((i for out, i in maker.items() if path.startswith(out + "/")), None)
        if index is None or index in needed:
            continue
        needed.add(index)
        pending += [_name(p) for p in rules[index]["inputs"]]
    return [rules[i] for i in sorted(needed)]


def run_by_hand(job_dir: Path, hand: Path, targets: list[str]) -> None:
    """Run the job's own rule commands, one after another in one folder, with no makeflow:
    only the files no rule makes (staged inputs, stage files) are copied from the job."""
    rules = load_rules(job_dir)
    made = {_name(out) for rule in rules for out in rule["outputs"]}
    sources = {_name(p) for rule in rules for p in rule["inputs"]} - made
    for source in sources:
        if not any(source.startswith(m + "/") for m in made):
            (hand / source).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(job_dir / source, hand / source)
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "LANG": "C.UTF-8"}
    for rule in rules_for(rules, targets):
        done = subprocess.run(
            ["/bin/sh", "-c", rule["command"]], cwd=hand, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, (rule["command"][:300], done.stderr[-1500:])


def same_content(a: Path, b: Path) -> bool:
    if a.suffix == ".lmm":
        from lmpy import Matrix

        left, right = Matrix.load(str(a)), Matrix.load(str(b))
        return (
            left.shape == right.shape
            and np.array_equal(np.asarray(left), np.asarray(right), equal_nan=True)
            and left.get_headers() == right.get_headers()
        )
    return a.read_bytes() == b.read_bytes()


def check_report(live, name: str, job: dict) -> None:
    """The package's report: listed with role `report`, completed by the controller, every
    figure (role `figures`, each in the manifest with its sha256) drawn and inline."""
    outputs = live.get(f"/api/v1/jobs/{job['id']}/outputs/?page_size=500").json()["results"]
    roles = {o["path"]: o["role"] for o in outputs}
    assert roles.get("report.html") == "report", (name, roles)
    figures = sorted(path for path, role in roles.items() if role == "figures")
    assert figures, f"{name}: no figures"
    assert all(path.startswith("figures/") and path.endswith(".png") for path in figures)
    job_dir = live.stack.data_dir / "jobs" / job["id"]
    with zipfile.ZipFile(job_dir / "package.zip") as archive:
        html = archive.read("outputs/report.html").decode()
        manifest = json.loads(archive.read("manifest.json"))
        for path in figures:
            (entry,) = [o for o in manifest["outputs"] if o["path"] == path]
            assert hashlib.sha256(archive.read(f"outputs/{path}")).hexdigest() == entry["sha256"]
    assert html.count('<img src="data:image/png;base64,') == len(figures), name
    assert "Not drawn" not in html, name
    assert "<!-- lmweb:job -->" not in html and "<h2>Timings</h2>" in html, name


@pytest.mark.parametrize("source", ["synthetic", "sample"])
def test_every_example_request_completes_as_given(live, report, tmp_path, source):
    """On every clone with synthetic inputs shaped like the example's (the request as given,
    params included); with LMWEB_SAMPLE_DATA, on the sample data the examples name."""
    names = [name for name in translators.names() if name != "selftest"]
    if source == "sample":
        uploads = {name: sample_uploads(name) for name in names}
    else:
        uploads = {name: synthetic.example_uploads(name, tmp_path / "in" / name) for name in names}
    # All at once: the workers share them, as they would a lab's jobs.
    jobs = {name: submit_example(live, name, uploads[name]) for name in names}
    results = {
        name: wait_until_finished(live, job_id, timeout=900) for name, job_id in jobs.items()
    }
    for name, job in results.items():
        outputs = live.get(f"/api/v1/jobs/{job['id']}/outputs/?page_size=500").json()
        report(
            f"{name}: {job['state']}, {job['progress']['total']} rules, "
            f"{outputs.get('count', 0)} outputs"
        )
    assert {name: job["state"] for name, job in results.items()} == dict.fromkeys(
        results, "COMPLETE"
    ), {name: job["error"] for name, job in results.items()}

    for name, job in results.items():
        check_report(live, name, job)

    for name, job in results.items():
        job_dir = live.stack.data_dir / "jobs" / job["id"]
        targets = []
        for pattern in DETERMINISTIC.get(name, []):
            found = sorted(p.relative_to(job_dir).as_posix() for p in job_dir.glob(pattern))
            assert found, f"{name}: no {pattern}"
            targets += found[:2]
        if not targets:
            continue
        hand = tmp_path / name
        run_by_hand(job_dir, hand, targets)
        differing = [t for t in targets if not same_content(job_dir / t, hand / t)]
        report(f"{name}: {len(targets) - len(differing)}/{len(targets)} outputs equal by hand")
        assert differing == [], name

    for name, job in results.items():
        job_dir = live.stack.data_dir / "jobs" / job["id"]
        # The package holds exactly what the manifest lists.
        with zipfile.ZipFile(job_dir / "package.zip") as archive:
            manifest = json.loads(archive.read("manifest.json"))
            names = set(archive.namelist())
        packaged = {n for n in names if n.startswith("outputs/")}
        assert packaged == {f"outputs/{o['path']}" for o in manifest["outputs"]}
        # Beside them: the manifest, SHA256SUMS, the RO-Crate, its README.md and the Makeflow
        # file of each stage.
        stages = json.loads((job_dir / "stages.json").read_text())["started"]
        assert names - packaged == {
            "manifest.json",
            "SHA256SUMS",
            "README.md",
            "ro-crate-metadata.json",
            *(f"workflow/{stage}.mf.json" for stage in stages),
        }
        # ... and the package is a valid Workflow Run RO-Crate of the job.
        unpacked = tmp_path / "crates" / name
        with zipfile.ZipFile(job_dir / "package.zip") as archive:
            archive.extractall(unpacked)
        validate(unpacked)
        crate = read_with_ro_crate_py(unpacked)
        rules = live.get(f"/api/v1/jobs/{job['id']}/tasks/?page_size=1000").json()["results"]
        assert len(crate["actions"]) == 1 + len(rules), name
        for output in manifest["outputs"]:
            assert crate["files"][f"outputs/{output['path']}"] == output["sha256"]
