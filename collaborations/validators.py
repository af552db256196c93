"""Field validators shared by the models (hence the admin) and the API serializers."""

from django.core.exceptions import ValidationError

from vantage_client import crypto


def validate_public_key(value: str) -> None:
    """A blank key, or a PEM RSA public key the clients can encrypt for.

    Checked when the key is stored, not when a task needs it: a key nobody can encrypt
    for would otherwise surface only as every task of an encrypted collaboration failing.
    """
    if not value.strip():
        return
    try:
        crypto.load_public_key(value)
    except crypto.KeyFormatError as exc:
        raise ValidationError(f"Not a usable public key: {exc}.", code="invalid_public_key")
