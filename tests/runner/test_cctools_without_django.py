"""jobs.cctools runs on worker hosts, which have no Django: importing it must not import Django."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The environment of a worker host: no Django settings module to find.
NO_DJANGO = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}


def test_the_cctools_package_imports_without_django_or_the_service():
    code = (
        "import sys, jobs.cctools.makeflow, jobs.cctools.pool, jobs.cctools.catalog, "
        "jobs.cctools.log; "
        "print(sorted(name for name in sys.modules if name.split('.')[0] in "
        "('django', 'rest_framework', 'celery', 'lmweb')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=NO_DJANGO, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
