"""App configuration."""

from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = "Jobs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks, versions  # noqa: F401  (checks registers the deploy checks)

        # Once per process, before any request: no request starts a process to learn them.
        versions.load()
