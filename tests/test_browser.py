"""A person's view: headless Chromium opens a finished job's admin page and sees it drawn,
and opens a package's report from disk, offline."""

import json
import zipfile

import pytest
from django.test import Client
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

import translators
from jobs.execution import packaging
from jobs.execution.controller import write_stage
from jobs.execution.folder import JobFolder
from jobs.models import Job, Output
from tests.support.stages import demo_inputs, run_stage

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,2000",
    ):
        options.add_argument(flag)
    # Every request the page makes is in the performance log (Network.requestWillBeSent).
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    # The driver Debian ships: Selenium would otherwise try to download one.
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def finished_job(owner) -> Job:
    job = Job.objects.create(
        owner=owner,
        workflow="selftest",
        request={},
        state="COMPLETE",
        rules_total=4,
        rules_done=4,
    )
    stage = translators.get("selftest").plan(
        {"workflow": "selftest", "params": {"tasks": 3}}, {}, []
    )
    (job.directory / "outputs").mkdir(parents=True)
    folder = JobFolder.of(job)
    write_stage(folder, stage)  # as the controller writes it: the graph is drawn
    folder.mark_done(["main"])
    heatmap = job.directory / "outputs" / "heatmap.png"
    Image.linear_gradient("L").resize((320, 200)).save(heatmap)
    Output.objects.create(
        job=job,
        path="heatmap.png",
        role="result",
        media_type="image/png",
        size=heatmap.stat().st_size,
        sha256="-",
    )
    return job


def test_the_admin_job_page_shows_progress_graph_and_heatmap(
    live_server, browser, make_user, data_dir, tmp_path
):
    staff = make_user("operator", staff=True)
    staff.is_superuser = True
    staff.save()
    job = finished_job(staff)
    session = Client()
    session.force_login(staff)

    browser.get(live_server.url + "/admin/login/")
    browser.add_cookie({"name": "sessionid", "value": session.cookies["sessionid"].value})
    browser.get(f"{live_server.url}/admin/jobs/job/{job.id}/change/")
    browser.save_screenshot(str(tmp_path / "job-page.png"))

    progress = browser.find_element(By.TAG_NAME, "progress")
    assert progress.get_attribute("value") == "100"
    drawn = browser.execute_script(
        "return [...document.images].map(i => [i.getAttribute('alt'), i.complete, i.naturalWidth])"
    )
    widths = {alt: width for alt, complete, width in drawn if complete}
    assert widths.get("main", 0) > 0, drawn  # the workflow graph, an SVG from Graphviz
    assert widths.get("heatmap.png", 0) == 320, drawn
    assert "download the package" in browser.page_source


def packaged_pam_stats_job(owner) -> Job:
    """A pam-stats job (demo PAM and tree, 10 randomizations) whose stage ran rule by rule, as
    workers run it, then packaged by the controller's own code."""
    request = {
        "workflow": "pam-stats",
        "name": "Demo <PAM>",
        "inputs": {"pam": "00000000-0000-0000-0000-000000000001"},
        "params": {"randomizations": 10, "seed": 1, "p_value_method": "fdr", "alpha": 0.05},
    }
    job = Job.objects.create(
        owner=owner, workflow="pam-stats", name=request["name"], request=request, state="RUNNING"
    )
    folder = JobFolder.of(job)
    demo_inputs(folder.root)
    staged = {"pam": "inputs/pam.lmm", "tree": "inputs/tree.tre"}
    stage = translators.get("pam-stats").plan(
        {
            **request,
            "inputs": {**request["inputs"], "tree": "00000000-0000-0000-0000-000000000002"},
        },
        staged,
        [],
    )
    run_stage(stage, folder.root)
    for entry in packaging.package_job(job, folder):
        Output.objects.create(job=job, **entry)
    Job.objects.filter(pk=job.pk).update(state="COMPLETE")
    return job


def requests_made(browser) -> list[str]:
    urls = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def test_the_report_opens_offline_from_the_unzipped_package(browser, make_user, data_dir, tmp_path):
    job = packaged_pam_stats_job(make_user("rosa"))
    unzipped = tmp_path / "package"
    with zipfile.ZipFile(JobFolder.of(job).package) as package:
        package.extractall(unzipped)
        figures = [n for n in package.namelist() if n.startswith("outputs/figures/")]
    assert len(figures) >= 20
    browser.get_log("performance")  # start from an empty log
    browser.get((unzipped / "outputs" / "report.html").as_uri())
    browser.save_screenshot(str(tmp_path / "report.png"))
    drawn = browser.execute_script(
        "return [...document.images].map(i => [i.alt, i.complete, i.naturalWidth])"
    )
    assert len(drawn) == len(figures)
    assert all(complete and width > 300 for _, complete, width in drawn), drawn
    assert "Demo &lt;PAM&gt;" in browser.page_source, "the request, escaped"
    made = requests_made(browser)
    assert made, "the log records the page's own load"
    assert all(url.startswith(("file://", "data:")) for url in made), made


def test_the_admin_job_page_shows_the_report(live_server, browser, make_user, data_dir, tmp_path):
    staff = make_user("operator", staff=True)
    staff.is_superuser = True
    staff.save()
    job = packaged_pam_stats_job(staff)
    session = Client()
    session.force_login(staff)
    browser.get(live_server.url + "/admin/login/")
    browser.add_cookie({"name": "sessionid", "value": session.cookies["sessionid"].value})
    browser.get(f"{live_server.url}/admin/jobs/job/{job.id}/change/")
    assert "open the report" in browser.page_source
    pictures = browser.execute_script("return [...document.images].map(i => i.alt)")
    assert not any(alt.startswith("figures/") for alt in pictures), "figures stay in the report"
    frame = browser.find_element(By.CSS_SELECTOR, "iframe[title=report]")
    browser.switch_to.frame(frame)
    drawn = browser.execute_script(
        "return [...document.images].map(i => [i.complete, i.naturalWidth])"
    )
    browser.switch_to.default_content()
    assert drawn and all(complete and width > 300 for complete, width in drawn), drawn
