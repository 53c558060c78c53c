#!/usr/bin/env python
"""Django's command-line utility for lmweb."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lmweb.settings")
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as exc:
        # A bad environment: say which variable, without a traceback.
        sys.exit(f"lmweb: configuration error: {exc}")


if __name__ == "__main__":
    main()
