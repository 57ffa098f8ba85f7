"""What a client-chosen id may hold: message, agent and job ids travel in URL paths and headers."""

from __future__ import annotations

import re

from .errors import BadRequest

MAX_ID_LENGTH = 256
# RFC 3986's unreserved characters, its sub-delimiters, ':' and '@': what a path segment holds
# unencoded, so every client sends an id the same way. Anything else reaches the API percent-
# encoded by some clients and not others ('?' and '#' end the path, so a run's callbackUrl would
# break), and text outside Latin-1 cannot go in the webhook-id header at all.
ALLOWED_CHARACTERS = "letters, digits and - . _ ~ ! $ & ' ( ) * + , ; = : @"
_DISALLOWED = re.compile(r"[^A-Za-z0-9\-._~!$&'()*+,;=:@]")


def check_id(value: object, field: str = "id") -> str:
    if not isinstance(value, str):
        raise BadRequest(f"{field} is required and must be a string")
    if not value:
        raise BadRequest(f"{field} must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise BadRequest(f"{field} must be at most {MAX_ID_LENGTH} characters, got {len(value)}")
    bad = _DISALLOWED.search(value)
    if bad:
        raise BadRequest(f"{field} must not contain {bad.group()!r}; it may hold {ALLOWED_CHARACTERS}")
    if value in {".", ".."}:
        # HTTP clients resolve such path segments away: /messages/.. is /.
        raise BadRequest(f"{field} must not be {value!r}")
    return value
