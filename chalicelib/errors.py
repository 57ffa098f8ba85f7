"""One error tree. Every error a caller can cause carries its HTTP status."""

from __future__ import annotations


class PunctualError(Exception):
    """Base of every error Punctual raises on purpose."""

    status_code = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(PunctualError):
    status_code = 400


class Unauthorized(PunctualError):
    status_code = 401


class NotFound(PunctualError):
    status_code = 404


class Conflict(PunctualError):
    status_code = 409


class PayloadTooLarge(PunctualError):
    status_code = 413


class Unavailable(PunctualError):
    """A backing service (Redis, SQS) did not answer; the caller may retry."""

    status_code = 503


class StorageFull(Unavailable):
    """Redis is out of memory and refuses writes (maxmemory-policy noeviction): loud, never a loss."""


class EvictingStorage(Unavailable):
    """Redis would evict keys under memory pressure, losing accepted messages: refused at start."""

    def __init__(self, message: str, policy: str | None) -> None:
        super().__init__(message)
        self.policy = policy
