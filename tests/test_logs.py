"""Log lines are JSON objects naming the job they are about, from web and controller alike."""

import json
import logging

import pytest

from lmweb.logs import JobFilter, JsonFormatter, job_context


def render(logger_name: str, message: str, **extra) -> dict:
    record = logging.LogRecord(logger_name, logging.INFO, __file__, 1, message, (), None)
    for key, value in extra.items():
        setattr(record, key, value)
    JobFilter().filter(record)
    return json.loads(JsonFormatter().format(record))


def test_a_line_written_in_a_job_context_names_the_job():
    with job_context("1234"):
        line = render("jobs.runner", "makeflow started")
    assert line["job_id"] == "1234"
    assert line["message"] == "makeflow started" and line["logger"] == "jobs.runner"


def test_a_line_outside_any_job_has_no_job_id():
    assert "job_id" not in render("django.request", "hello")


@pytest.mark.django_db
def test_the_web_logs_a_submission_with_its_job_id(api, caplog):
    with caplog.at_level(logging.INFO, logger="jobs.services"):
        job = api.post("/api/v1/jobs/", {"workflow": "selftest"}).json()
    records = [r for r in caplog.records if r.name == "jobs.services"]
    assert any(getattr(r, "job_id", "") == job["id"] for r in records)
