"""Who may open a WebSocket connection, and how many: the API token (the `token` query parameter
or a Bearer header), or a one-time connect ticket (`?ticket=`, from POST /api/ws-ticket) so that
the token need not sit in a URL; per-token and per-connection caps; and connections whose token
has been rotated away since they were opened.

A connection's token is kept as a hash of it (`token_id`), never the token itself: it is compared
with the current token's on each of the connection's frames and by the per-minute sweep.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from typing import Any

from .clock import Clock
from .config import Settings
from .errors import Unauthorized
from .live_store import Caps, LiveStore
from .timeutil import format_instant

TICKET_BYTES = 24
# A ticket's Redis record outlives its expiry by this much (real time), so that an expired one is
# told apart from one never issued; the clock, not Redis, decides when it has expired.
TICKET_RECORD_MARGIN_MS = 60_000
BAD_TOKEN = "missing or invalid token"


def token_id(token: str) -> str:
    """A token as a connection's record holds it: a hash, so Redis never holds the token."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def connections_cap(cap: int) -> str:
    """What a connection refused by the per-token cap is told."""
    return (f"connection cap reached: one API token may hold {cap} WebSocket connections "
            "(WS_MAX_CONNECTIONS_PER_TOKEN); close one first")


def _ticket_hash(ticket: str) -> str:
    return hashlib.sha256(ticket.encode()).hexdigest()


class WsAccess:
    def __init__(self, live: LiveStore, clock: Clock, settings: Settings) -> None:
        self._live = live
        self._clock = clock
        self._settings = settings
        self.current = token_id(settings.api_token) if settings.api_token else ""
        self.caps = Caps(settings.ws_max_connections_per_token, settings.ws_max_subscriptions_per_connection)

    def valid(self, token: object) -> bool:
        expected = self._settings.api_token
        return (isinstance(token, str) and bool(token) and bool(expected)
                and hmac.compare_digest(token.encode(), expected.encode()))

    def rotated(self, connection_token_id: str) -> bool:
        """Whether a connection was opened with a token that is no longer the API token."""
        return bool(connection_token_id) and connection_token_id != self.current

    def issue_ticket(self) -> dict[str, Any]:
        """A one-time connect ticket for the current token, good for ws_ticket_seconds."""
        ticket = secrets.token_urlsafe(TICKET_BYTES)
        lifetime_ms = self._settings.ws_ticket_seconds * 1000
        expires = self._clock.now_ms() + lifetime_ms
        record_ms = lifetime_ms + TICKET_RECORD_MARGIN_MS
        self._live.put_ticket(_ticket_hash(ticket), self.current, expires, record_ms)
        return {"ticket": ticket, "expiresAt": format_instant(expires)}

    def redeem(self, ticket: str) -> str:
        """The token id a ticket was issued for; it works once. Unauthorized says why not."""
        taken = self._live.take_ticket(_ticket_hash(ticket))
        if taken is None:
            raise Unauthorized(
                "connect ticket unknown or already used: get a new one from POST /api/ws-ticket"
            )
        issued_for, expires = taken
        if self._clock.now_ms() > expires:
            raise Unauthorized("connect ticket expired: get a new one from POST /api/ws-ticket and connect "
                               f"within {self._settings.ws_ticket_seconds} s")
        if self.rotated(issued_for):
            raise Unauthorized("connect ticket was issued for an API token that has since been rotated")
        return issued_for

    def admit(self, query: Mapping[str, str], headers: Mapping[str, str]) -> str:
        """The token id a $connect comes with: a ticket's, or the API token's."""
        ticket = query.get("ticket")
        if ticket:
            return self.redeem(ticket)
        token = query.get("token") or ""
        if not token:
            lowered = {k.lower(): v for k, v in headers.items()}
            scheme, _, value = (lowered.get("authorization") or "").partition(" ")
            token = value.strip() if scheme.lower() == "bearer" else ""
        if not self.valid(token):
            raise Unauthorized(BAD_TOKEN)
        return self.current
