"""Environment values as the vantage6 4.x contract passes them: base32, '=' written as '!'."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping


def encode_value(value: str) -> str:
    return base64.b32encode(value.encode("utf-8")).decode("ascii").replace("=", "!")


def decode_value(value: str) -> str:
    return base64.b32decode(value.replace("!", "=")).decode("utf-8")


def decode_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """Every variable that decodes as the contract encodes; anything else (PATH, HOME) is left out."""
    decoded = {}
    for name, value in environ.items():
        try:
            decoded[name] = decode_value(value)
        except (binascii.Error, UnicodeDecodeError, ValueError):
            continue
    return decoded
