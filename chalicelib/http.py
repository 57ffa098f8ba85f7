"""Turning results and errors into API Gateway responses, in each API's error shape."""

from __future__ import annotations

import functools
import hmac
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote

from chalice import Response

from .errors import PunctualError, Unauthorized
from .redis_client import storage_error

log = logging.getLogger(__name__)

JSON_HEADERS = {"Content-Type": "application/json"}


def json_response(body: Any, status: int = 200) -> Response:
    return Response(body=json.dumps(body), status_code=status, headers=JSON_HEADERS)


def detail_error(message: str, status: int) -> Response:
    """The webhook API's error shape (the original service's)."""
    return json_response({"detail": message}, status)


def api_error(message: str, status: int) -> Response:
    """The agent API's error shape."""
    return json_response({"success": False, "error": message}, status)


def handles_errors(shape: Callable[[str, int], Response]) -> Callable[..., Any]:
    """Answer PunctualErrors with their status, a Redis failure met outside Store.call as the 503
    it would have been there, anything else with a bare 500; the view gets its path parameters
    decoded. No answer repeats an exception's own text: it names servers (host, port)."""

    def decorate(view: Callable[..., Response]) -> Callable[..., Response]:
        @functools.wraps(view)
        def wrapper(**path: str) -> Response:
            try:
                # `chalice local` passes path parameters as sent, percent-encoding and all;
                # API Gateway decodes them. No id holds '%' (ids.py), so decoding here is right
                # either way: /messages/a%3Ab and /messages/a:b both name the id "a:b".
                return view(**{name: unquote(value) for name, value in path.items()})
            except PunctualError as exc:
                return shape(exc.message, exc.status_code)
            except Exception as exc:
                translated = storage_error(exc)
                if translated is not None:
                    return shape(translated.message, translated.status_code)
                log.exception("unhandled error in %s", view.__name__)
                return shape("internal server error", 500)

        return wrapper

    return decorate


def bearer_token(headers: Mapping[str, str], what: str = "API_TOKEN") -> str:
    value = headers.get("authorization") or ""
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized(f"missing bearer token; send 'Authorization: Bearer <{what}>'")
    return token.strip()


def token_matches(headers: Mapping[str, str], expected: str) -> bool:
    """Whether the request carries the expected bearer token (compared in constant time)."""
    try:
        token = bearer_token(headers)
    except Unauthorized:
        return False
    return bool(expected) and hmac.compare_digest(token.encode(), expected.encode())


def require_token(headers: Mapping[str, str], expected: str) -> None:
    """Bearer authentication, compared in constant time."""
    token = bearer_token(headers)
    if not expected or not hmac.compare_digest(token.encode(), expected.encode()):
        raise Unauthorized("invalid token")
