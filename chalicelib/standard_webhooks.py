"""Standard Webhooks headers (https://www.standardwebhooks.com): what every request Punctual
sends carries, webhooks and agent calls alike, so receivers can verify and dedupe them."""

from __future__ import annotations

import base64
import hashlib
import hmac

_USER_AGENT = "Punctual-Webhooks/1.0"


def _secret_bytes(secret: str) -> bytes:
    # Standard Webhooks secrets are base64 behind a `whsec_` prefix; any other
    # string is used as it is.
    if secret.startswith("whsec_"):
        return base64.b64decode(secret[len("whsec_"):])
    return secret.encode()


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(_secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def webhook_headers(webhook_id: str, timestamp: int, body: bytes, secret: str | None) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        "User-Agent": _USER_AGENT,
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
    }
    if secret:
        headers["webhook-signature"] = sign(secret, webhook_id, timestamp, body)
    return headers
