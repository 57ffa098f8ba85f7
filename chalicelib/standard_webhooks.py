"""Standard Webhooks headers (https://www.standardwebhooks.com): what every request Punctual
sends carries, webhooks and agent calls alike, so receivers can verify and dedupe them.

A signing secret is the spec's `whsec_<base64>`; a *secret setting* (WEBHOOK_SECRET, a message's
or an agent's `webhookSecret`) is one secret, or two separated by a space while receivers move
from one to the other: each request is then signed with both, and the `webhook-signature` header
carries both signatures, space-separated, as the spec allows.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from .errors import BadRequest

_USER_AGENT = "Punctual-Webhooks/1.0"
PREFIX = "whsec_"
# A shorter HMAC key is guessable sooner than SHA-256 is broken; Standard Webhooks' own
# libraries generate 24 bytes.
MIN_SECRET_BYTES = 24
# The new secret and the one receivers may still verify with, during a change.
MAX_SECRETS = 2
EXAMPLE = "whsec_$(openssl rand -base64 32)"


def secret_key(secret: str, name: str) -> bytes:
    """The HMAC key of one `whsec_` secret; a ValueError saying what is wrong with it."""
    if not secret.startswith(PREFIX):
        raise ValueError(
            f"{name} must be a Standard Webhooks secret, whsec_ followed by base64 (e.g. {EXAMPLE}); "
            f"a secret of your own keeps signing the same way as whsec_ + its base64"
        )
    try:
        key = base64.b64decode(secret[len(PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{name}: what follows whsec_ is not valid base64") from None
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(
            f"{name} decodes to {len(key)} bytes; at least {MIN_SECRET_BYTES} are needed (e.g. {EXAMPLE})"
        )
    return key


def check_secrets(setting: str, name: str) -> str:
    """A secret setting, checked: one secret, or two space-separated (the new one first); it is
    returned with its spacing normalised. A ValueError says what is wrong."""
    secrets = setting.split()
    if not secrets:
        raise ValueError(f"{name} is empty")
    if len(secrets) > MAX_SECRETS:
        raise ValueError(
            f"{name} holds {len(secrets)} secrets; at most {MAX_SECRETS} (the new one, then the old)"
        )
    for secret in secrets:
        secret_key(secret, name)
    return " ".join(secrets)


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret, "the signing secret"), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def webhook_headers(webhook_id: str, timestamp: int, body: bytes, secrets: str | None) -> dict[str, str]:
    """The headers of one request, signed with each secret of `secrets` (a checked setting;
    None: unsigned)."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": _USER_AGENT,
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
    }
    if secrets:
        headers["webhook-signature"] = " ".join(
            sign(secret, webhook_id, timestamp, body) for secret in secrets.split()
        )
    return headers


def secret_field(value: object, name: str = "webhookSecret") -> str:
    """A request's own secret setting (a message's or an agent's), or a 400 saying what is wrong."""
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string: whsec_ followed by base64 of at least "
                         f"{MIN_SECRET_BYTES} bytes")
    try:
        return check_secrets(value, name)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
