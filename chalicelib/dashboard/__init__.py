"""The dashboard: one static page (HTML, JS, CSS beside this module) served without a token.

The page holds no data: it asks the user for the API token and reads everything through the
token-protected API and the WebSocket, so serving it without a token makes nothing public. The
files live inside chalicelib/ so that `chalice package` ships them with the Lambda.
"""

from __future__ import annotations

import functools
import html
from pathlib import Path
from urllib.parse import urlsplit

from chalice import Response

from ..config import Settings
from ..errors import NotFound
from ..management_api import management_endpoint

FOLDER = Path(__file__).parent
# The files the page loads besides itself, and what they are.
ASSETS = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
WS_URL_SLOT = "{{WS_URL}}"
# Nothing but the page's own files, the REST API (same origin) and the WebSocket API (on AWS
# another host): a value that slipped past escaping still could not load a script or send the
# token elsewhere.
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src {connect}; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def ws_url(settings: Settings) -> str:
    """The WebSocket API's URL for browsers: the management API's endpoint with a ws(s) scheme.

    On AWS both are https://{api-id}.execute-api.{region}.amazonaws.com/{stage}, another host than
    the REST API's; locally both are the gateway's http://host:port/api. '' when not configured.
    """
    endpoint = management_endpoint(settings) or ""
    if endpoint.startswith("https://"):
        return "wss://" + endpoint.removeprefix("https://")
    if endpoint.startswith("http://"):
        return "ws://" + endpoint.removeprefix("http://")
    return ""


@functools.cache
def _text(name: str) -> str:
    return (FOLDER / name).read_text(encoding="utf-8")


def _headers(content_type: str, csp: str | None = None) -> dict[str, str]:
    headers = {
        "Content-Type": content_type,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        # A new deploy's files are taken at once; they are small.
        "Cache-Control": "no-cache",
    }
    if csp:
        headers["Content-Security-Policy"] = csp
    return headers


def page(settings: Settings) -> Response:
    """index.html with the WebSocket URL filled in."""
    url = ws_url(settings)
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}" if parts.netloc else ""
    body = _text("index.html").replace(WS_URL_SLOT, html.escape(url, quote=True))
    csp = _CSP.format(connect=" ".join(filter(None, ["'self'", origin])))
    return Response(body=body, status_code=200, headers=_headers("text/html; charset=utf-8", csp))


def asset(name: str) -> Response:
    content_type = ASSETS.get(name)
    if content_type is None:
        raise NotFound(f"no dashboard file {name!r}; the dashboard is at /dashboard")
    return Response(body=_text(name), status_code=200, headers=_headers(content_type))
