"""Structured log lines (one JSON object each) that carry the job id of the work in hand."""

import contextvars
import json
import logging
from contextlib import contextmanager
from datetime import UTC, datetime

current_job: contextvars.ContextVar[str] = contextvars.ContextVar("current_job", default="")


@contextmanager
def job_context(job_id) -> None:
    """Every log line written inside names `job_id`, whichever module writes it."""
    token = current_job.set(str(job_id))
    try:
        yield
    finally:
        current_job.reset(token)


class JobFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "job_id", ""):
            record.job_id = current_job.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        if getattr(record, "job_id", ""):
            line["job_id"] = record.job_id
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)
