"""The Celery app, configured from the Django settings (namespace CELERY)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lmweb.settings")

app = Celery("lmweb")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
