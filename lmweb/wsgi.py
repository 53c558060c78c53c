"""WSGI entry point (gunicorn lmweb.wsgi)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lmweb.settings")
application = get_wsgi_application()

# The web process reads the tool versions once, as it starts (gunicorn and runserver both load
# this module), so that no request starts a process to learn them; other processes (the
# controller's packaging, manage.py commands) read them on first use.
from jobs import versions  # noqa: E402  (needs the apps loaded above)

versions.load()
