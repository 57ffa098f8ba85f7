"""GET /dashboard: a static page served without a token, that loads nothing from elsewhere.

What the page does in a browser is tested in tests/e2e/test_dashboard_e2e.py.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from chalicelib import dashboard
from tests.conftest import Harness

FILES = ("index.html", "app.js", "style.css")


class _Attributes(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, dict(attrs)))


def attributes(page: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Attributes()
    parser.feed(page)
    return parser.found


def ws_url_of(page: str) -> str | None:
    return next(attrs["data-ws-url"] for tag, attrs in attributes(page) if tag == "html")


def test_the_page_is_served_without_a_token(harness: Harness) -> None:
    response = harness.client.http.get("/dashboard")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    page = response.body.decode()
    assert "<title>Punctual dashboard</title>" in page
    assert 'id="token"' in page and 'type="password"' in page  # it asks for the token


@pytest.mark.parametrize("name, kind", [("app.js", "text/javascript"), ("style.css", "text/css")])
def test_its_script_and_style_sheet_are_served(harness: Harness, name: str, kind: str) -> None:
    response = harness.client.http.get(f"/dashboard/{name}")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith(kind)
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.body.decode() == (dashboard.FOLDER / name).read_text()


@pytest.mark.parametrize("name", ["index.html", "__init__.py", "..%2Fopenapi.json", "nothing.js"])
def test_nothing_else_of_the_folder_is_served(harness: Harness, name: str) -> None:
    response = harness.client.http.get(f"/dashboard/{name}")
    assert response.status_code == 404
    assert "the dashboard is at /dashboard" in response.body.decode()


@pytest.mark.parametrize("endpoint, expected", [
    ("http://127.0.0.1:8001/api", "ws://127.0.0.1:8001/api"),
    ("https://abc123.execute-api.eu-west-1.amazonaws.com/api", "wss://abc123.execute-api.eu-west-1.amazonaws.com/api"),
])
def test_the_page_names_the_websocket_api(harness: Harness, endpoint: str, expected: str) -> None:
    # On AWS the WebSocket API is another host than the REST API: the page cannot guess it.
    harness.configure(ws_management_endpoint=endpoint)
    response = harness.client.http.get("/dashboard")
    assert ws_url_of(response.body.decode()) == expected
    origin = re.match(r"wss?://[^/]+", expected)
    assert origin is not None
    assert f"connect-src 'self' {origin.group(0)};" in response.headers["Content-Security-Policy"]


def test_the_websocket_url_from_the_api_id(harness: Harness) -> None:
    harness.configure(ws_management_endpoint=None, ws_api_id="abc123", aws_region="us-east-2",
                      ws_stage="prod")
    page = harness.client.http.get("/dashboard").body.decode()
    assert ws_url_of(page) == "wss://abc123.execute-api.us-east-2.amazonaws.com/prod"


def test_without_a_websocket_api_the_page_says_so(harness: Harness) -> None:
    harness.configure(ws_management_endpoint=None, ws_api_id=None)
    response = harness.client.http.get("/dashboard")
    assert ws_url_of(response.body.decode()) == ""
    assert "connect-src 'self';" in response.headers["Content-Security-Policy"]


def test_the_websocket_url_is_escaped_in_the_page(harness: Harness) -> None:
    harness.configure(ws_management_endpoint='http://x"><script>alert(1)</script>')
    page = harness.client.http.get("/dashboard").body.decode()
    assert "<script>alert" not in page
    assert ws_url_of(page) == 'ws://x"><script>alert(1)</script>'


def test_the_page_only_runs_its_own_files(harness: Harness) -> None:
    csp = harness.client.http.get("/dashboard").headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp
    assert "script-src 'self';" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp


def test_it_loads_nothing_from_elsewhere() -> None:
    # Offline, no CDN: every URL in the files is relative, but for the SVG namespace's name.
    for name in FILES:
        text = (dashboard.FOLDER / name).read_text()
        urls = set(re.findall(r"""(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s"'`)]*""", text))
        assert urls <= {"http://www.w3.org/2000/svg"}, (name, urls)
    page = (dashboard.FOLDER / "index.html").read_text()
    loaded = [attrs.get("src") or attrs.get("href")
              for tag, attrs in attributes(page) if tag in {"script", "link"}]
    assert loaded == ["dashboard/style.css", "dashboard/app.js"]


def test_the_script_never_writes_markup() -> None:
    # Values reach the page as text only: no HTML parsing of anything the API returned.
    script = (dashboard.FOLDER / "app.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in script, sink
