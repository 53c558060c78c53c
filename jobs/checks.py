"""System checks: `manage.py check --deploy` refuses a SECRET_KEY that anyone could know."""

from django.conf import settings
from django.core.checks import Error, Tags, register

# Words that mark a key someone typed as a stand-in, never a generated one.
PLACEHOLDER_WORDS = ("change-me", "changeme", "change_me", "secret", "placeholder", "example")
MIN_LENGTH = 50
MIN_DISTINCT = 5
# The fallbacks a development start uses (lmweb/settings.py with DEBUG on, Django's template).
KNOWN_FALLBACKS = ("insecure-development-key-only-used-with-DEBUG-on",)


def placeholder_reason(key: str) -> str | None:
    """Why `key` cannot be a real secret, or None when it may be one."""
    lowered = key.lower()
    if key in KNOWN_FALLBACKS or lowered.startswith(("django-insecure", "insecure-")):
        return "it is a published development fallback"
    for word in PLACEHOLDER_WORDS:
        if word in lowered:
            return f"it contains {word!r}"
    if len(key) < MIN_LENGTH:
        return f"it is shorter than {MIN_LENGTH} characters"
    if len(set(key)) < MIN_DISTINCT:
        return f"it has fewer than {MIN_DISTINCT} distinct characters"
    return None


@register(Tags.security, deploy=True)
def check_secret_key(app_configs=None, **kwargs) -> list[Error]:
    reason = placeholder_reason(str(getattr(settings, "SECRET_KEY", "")))
    if reason is None:
        return []
    return [
        Error(
            f"SECRET_KEY is a placeholder: {reason}.",
            hint=(
                "Generate one, e.g. python -c 'import secrets; print(secrets.token_urlsafe(50))', "
                "and pass it in the SECRET_KEY environment variable (make run keeps one in "
                "var/secrets/secret_key)."
            ),
            id="lmweb.E001",
        )
    ]
