"""App configuration."""

from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = "Jobs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import callbacks, checks  # noqa: F401  (callbacks listen for finished jobs;
        # checks registers the deploy checks)
