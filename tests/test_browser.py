"""A person's view: headless Chromium opens a finished job's admin page and sees it drawn."""

import pytest
from django.test import Client
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

import translators
from jobs.execution.controller import write_stage
from jobs.execution.folder import JobFolder
from jobs.models import Job, Output

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
