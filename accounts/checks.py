"""`manage.py check --deploy`: the audit chain's key should be its own, not SECRET_KEY's."""

from django.conf import settings
from django.core.checks import Tags, Warning, register


@register(Tags.security, deploy=True)
def audit_key_is_set(app_configs, **kwargs):
    if settings.VANTAGE_AUDIT_KEY:
        return []
    return [Warning(
        "VANTAGE_AUDIT_KEY is not set: the audit chain is keyed with a key derived from SECRET_KEY, "
        "so changing SECRET_KEY makes every existing event fail verification.",
        hint="Set VANTAGE_AUDIT_KEY or VANTAGE_AUDIT_KEY_FILE to a long random value kept outside the database.",
        id="accounts.W001",
    )]
