"""Outbound calls cannot be steered inside the network: DNS rebinding, local mode's limits,
addresses that embed an internal IPv4, and what a refusal tells the caller."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import trustme
import urllib3.util.connection

from chalicelib import services
from chalicelib.config import Settings
from chalicelib.errors import BadRequest
from chalicelib.sender import HttpSender
from chalicelib.services import Services
from chalicelib.targets import check_target_url
from tests.conftest import AUTH, Harness

PUBLIC = "93.184.216.34"


class Listener:
    """An HTTP(S) endpoint on a loopback address that records every connection and request."""

    def __init__(self, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None, port: int = 0) -> None:
        self.connections = 0
        self.requests: list[dict[str, str]] = []  # each request's headers, lower-cased names
        self.server_names: list[str | None] = []  # the TLS server name of each handshake
        listener = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keeps connections alive, as real receivers do

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                listener.requests.append({k.lower(): v for k, v in self.headers.items()})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def process_request(self, request: Any, client_address: Any) -> None:
                listener.connections += 1
                super().process_request(request, client_address)

        self.server = Server((host, port), Handler)
        if tls is not None:
            tls.sni_callback = lambda sock, name, ctx: self.server_names.append(name)  # type: ignore[assignment]
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listeners() -> Iterator[Callable[..., Listener]]:
    made: list[Listener] = []

    def make(host: str = "127.0.0.1", tls: ssl.SSLContext | None = None, port: int = 0) -> Listener:
        made.append(Listener(host, tls, port))
        return made[-1]

    yield make
    for listener in made:
        listener.stop()


class Answers:
    """A resolver that gives its answers in turn (the last one from then on) and counts lookups."""

    def __init__(self, *answers: list[str]) -> None:
        self._answers = list(answers)
        self.lookups = 0

    def __call__(self, host: str, port: int) -> list[str]:
        self.lookups += 1
        return self._answers[min(self.lookups, len(self._answers)) - 1]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Where urllib3 opens connections; only loopback ones are let through, so that a test never
    reaches the network (a connection to a public address fails as if nothing answered)."""
    made: list[tuple[str, int]] = []
    real = urllib3.util.connection.create_connection

    def create_connection(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        made.append(address)
        if address[0] != "localhost" and not address[0].startswith("127."):
            raise ConnectionRefusedError("kept off the network by the test")
        return real(address, *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", create_connection)
    return made


def post(sender: HttpSender, url: str) -> Any:
    return sender.post(url, b"{}", {"Content-Type": "application/json"}, "webhookUrl")


# -- DNS rebinding ------------------------------------------------------------------------


def test_a_name_that_rebinds_to_loopback_after_the_check_is_not_called_there(
    listeners: Callable[..., Listener], connects: list[tuple[str, int]]
) -> None:
    # The first lookup (the check's) answers a public address, every later one loopback, where
    # a listener waits. The call must go where the check looked, never to the listener.
    loopback = listeners()
    dns = Answers([PUBLIC], ["127.0.0.1"])
    clock = Clock()
    sender = HttpSender(2, allow_internal=False, resolver=dns, monotonic=clock)
    result = post(sender, f"http://localhost:{loopback.port}/hook")
    assert result.ok is False and result.refused is False  # the public address did not answer
    assert connects == [(PUBLIC, loopback.port)]
    # Once the kept lookup ends, the next one answers loopback: refused, and not connected to.
    clock.now += 10
    result = post(sender, f"http://localhost:{loopback.port}/hook")
    assert result.refused is True and "internal address" in result.error
    assert dns.lookups == 2 and connects == [(PUBLIC, loopback.port)]
    assert loopback.connections == 0 and loopback.requests == []


def test_a_kept_alive_connection_is_not_reused_once_the_name_points_elsewhere(
    listeners: Callable[..., Listener],
) -> None:
    # Local mode (loopback allowed), so both addresses can be real listeners on one port:
    # 127.0.0.1 first, then 127.0.0.2. The connection kept alive to the first must not carry
    # the call meant for the second.
    second = listeners("127.0.0.2")
    first = listeners("127.0.0.1", port=second.port)
    dns = Answers(["127.0.0.1"], ["127.0.0.2"], ["169.254.169.254"])
    clock = Clock()
    sender = HttpSender(2, allow_internal=True, resolver=dns, monotonic=clock)
    url = f"http://hooks.test:{second.port}/hook"
    assert post(sender, url).ok and post(sender, url).ok  # one lookup, one kept-alive connection
    assert (first.connections, len(first.requests), dns.lookups) == (1, 2, 1)
    clock.now += 10
    assert post(sender, url).ok
    assert (first.connections, len(first.requests)) == (1, 2)
    assert (second.connections, len(second.requests)) == (1, 1)
    # Then the name answers the metadata address: refused even in local mode, and the
    # connections kept alive to the listeners carry nothing.
    clock.now += 10
    result = post(sender, url)
    assert result.refused is True and "link-local or cloud metadata" in result.error
    assert len(first.requests) + len(second.requests) == 3


def test_a_lookup_is_kept_briefly_and_its_addresses_are_checked_at_every_call(
    listeners: Callable[..., Listener],
) -> None:
    receiver = listeners()
    dns = Answers(["127.0.0.1"])
    clock = Clock()
    sender = HttpSender(2, allow_internal=True, resolver=dns, monotonic=clock)
    url = f"http://hooks.test:{receiver.port}/hook"
    for _ in range(3):
        assert post(sender, url).ok
    assert dns.lookups == 1  # a burst to one host costs one lookup
    clock.now += 4.9
    assert post(sender, url).ok and dns.lookups == 1
    clock.now += 0.2
    assert post(sender, url).ok and dns.lookups == 2
    # The kept addresses are checked again by a sender that may not call them.
    strict = HttpSender(2, allow_internal=False, resolver=dns, monotonic=clock)
    assert post(strict, url).refused and post(strict, url).refused
    assert len(receiver.requests) == 5


def test_the_local_path_keeps_the_name_in_the_host_header(listeners: Callable[..., Listener]) -> None:
    receiver = listeners()
    sender = HttpSender(2, allow_internal=True)  # the system resolver: localhost is 127.0.0.1
    assert post(sender, f"http://localhost:{receiver.port}/hook?a=1#frag").ok
    assert receiver.requests[0]["host"] == f"localhost:{receiver.port}"
    assert post(sender, f"http://127.0.0.1:{receiver.port}/hook").ok
    assert receiver.requests[1]["host"] == f"127.0.0.1:{receiver.port}"


def test_https_goes_to_the_checked_address_with_the_name_as_server_name(
    listeners: Callable[..., Listener], tmp_path: Path
) -> None:
    ca = trustme.CA()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("hooks.example").configure_cert(tls)
    receiver = listeners(tls=tls)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    dns = Answers(["127.0.0.1"])
    sender = HttpSender(2, allow_internal=True, resolver=dns, ca_certs=str(ca_file))
    result = post(sender, f"https://hooks.example:{receiver.port}/hook")
    assert result.ok, result
    assert receiver.server_names == ["hooks.example"]
    assert receiver.requests[0]["host"] == f"hooks.example:{receiver.port}"
    # The certificate is checked against the name, not the address connected to.
    wrong = post(sender, f"https://other.example:{receiver.port}/hook")
    assert wrong.ok is False and "SSLError" in wrong.error
    assert len(receiver.requests) == 1


# -- local mode ------------------------------------------------------------------------------

NEVER = [
    "http://169.254.169.254/latest/meta-data",
    "http://169.254.170.2/v2/credentials",
    "http://2852039166/",  # 169.254.169.254 in decimal, octal, hex and short forms
    "http://0251.0376.0251.0376/",
    "http://0xa9fea9fe/",
    "http://169.254.43518/",
    "http://[::ffff:169.254.169.254]/",
    "http://[::ffff:a9fe:a9fe]/",
    "http://[2002:a9fe:a9fe::1]/",  # 6to4
    "http://[2001:0:4136:e378:8000:63bf:5601:5601]/",  # Teredo, client 169.254.169.254
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64
    "http://[fe80::1]/",
    "http://[fe80::a9fe:a9fe%25eth0]/",
    "http://[fd00:ec2::254]/latest/meta-data",
    "http://100.100.100.200/latest/meta-data",
    "http://[::ffff:100.100.100.200]/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://metadata.google.internal./computeMetadata/v1/",
]


@pytest.mark.parametrize("url", NEVER)
def test_link_local_and_metadata_addresses_are_refused_in_local_mode(url: str) -> None:
    with pytest.raises(BadRequest, match="metadata"):
        check_target_url(url, "webhookUrl", allow_internal=True)


def test_a_name_that_resolves_to_the_metadata_service_is_refused_in_local_mode() -> None:
    dns = Answers(["127.0.0.1", "169.254.169.254"])
    with pytest.raises(BadRequest, match="link-local or cloud metadata"):
        check_target_url("http://hooks.test/x", "webhookUrl", allow_internal=True, resolver=dns)


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:9000/hook", "http://localhost:9000/hook", "http://10.0.0.7/",
     "http://192.168.1.20/", "http://[::1]:9000/", "http://[fd00::1]/", "http://[2002:7f00:1::]/",
     "http://receiver.invalid/hook"],  # not up yet: checked when it is called
)
def test_local_mode_allows_loopback_and_private_targets(url: str) -> None:
    assert check_target_url(url, "webhookUrl", allow_internal=True) == url


def test_the_metadata_service_is_refused_at_call_time_in_local_mode(
    connects: list[tuple[str, int]],
) -> None:
    sender = HttpSender(2, allow_internal=True, resolver=Answers(["169.254.169.254"]))
    result = post(sender, "http://hooks.test/x")
    assert result.refused is True and result.retryable is False
    assert "link-local or cloud metadata" in result.error
    assert post(sender, "http://[2002:a9fe:a9fe::1]/x").refused is True
    assert connects == []


def test_local_mode_is_refused_on_lambda() -> None:
    env = {"PUNCTUAL_LOCAL": "1", "AWS_LAMBDA_FUNCTION_NAME": "punctual-local"}
    with pytest.raises(ValueError, match="PUNCTUAL_LOCAL is set on Lambda"):
        Settings.from_env(env)
    assert Settings.from_env({"AWS_LAMBDA_FUNCTION_NAME": "punctual-prod"}).local_mode is False
    assert Settings.from_env({"PUNCTUAL_LOCAL": "1"}).local_mode is True


def test_the_metadata_service_is_refused_at_submit_in_local_mode(harness: Harness) -> None:
    assert harness.svc.settings.local_mode  # the test stack runs in local mode
    response = harness.post({"id": "imds", "scheduleTo": "2030-01-01T00:00:00Z", "payload": {},
                             "webhookUrl": "http://169.254.169.254/latest/meta-data"})
    assert response.status_code == 400
    assert "link-local or cloud metadata" in response.json_body["detail"]
    status, body = harness.api("POST", "/api/agents", {
        "id": "imds", "name": "imds", "endpointUrl": "http://[fd00:ec2::254]/"})
    assert status == 400 and "link-local or cloud metadata" in body["error"], body
    assert harness.redis.dbsize() == 0


# -- addresses that embed an internal IPv4 ----------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["http://[2002:7f00:1::]/", "http://[2002:a9fe:a9fe::1]/", "http://[2002:a00:1::1]/",
     "http://[2002:c0a8:101::]/", "http://[2002:6464:64c8::]/",
     "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",  # Teredo, client 127.0.0.1
     "http://[fec0::1]/"],  # site-local (deprecated, never public)
)
def test_6to4_and_teredo_addresses_are_refused_by_their_embedded_address(url: str) -> None:
    with pytest.raises(BadRequest, match="internal address"):
        check_target_url(url, "webhookUrl", allow_internal=False)


def test_6to4_of_a_public_address_is_allowed() -> None:
    url = "http://[2002:5db8:d822::1]/"  # 93.184.216.34
    assert check_target_url(url, "webhookUrl", allow_internal=False) == url


# -- what a refusal tells ---------------------------------------------------------------------


def test_intake_refusals_do_not_name_the_internal_address(harness: Harness) -> None:
    dns = Answers(["10.20.30.40", "fd12:3456::7"])
    harness.svc = Services.build(
        replace(harness.svc.settings, local_mode=False),
        clock=harness.clock, redis_client=harness.redis, sqs_client=harness.sqs,
        resolver=dns, publisher=harness.published,
    )
    services.install(harness.svc)
    response = harness.post({"id": "m", "scheduleTo": "2030-01-01T00:00:00Z", "payload": {},
                             "webhookUrl": "https://hooks.corp.example/x"}, headers=AUTH)
    detail = response.json_body["detail"]
    assert response.status_code == 400 and "webhookUrl resolves to an internal address" in detail
    status, body = harness.api("POST", "/api/agents", {
        "id": "a", "name": "a", "endpointUrl": "https://agents.corp.example/run"})
    assert status == 400 and "endpointUrl resolves to an internal address" in body["error"]
    for shown in (detail, body["error"]):
        assert "10.20.30.40" not in shown and "fd12" not in shown
