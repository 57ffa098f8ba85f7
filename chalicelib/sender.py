"""The outbound HTTP client: POSTs webhooks and agent calls, refusing targets inside the network."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent import futures
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import urllib3
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.response import BaseHTTPResponse

from .deadline_http import deadline, passed, pool_manager
from .errors import BadRequest
from .targets import Resolver, Target, literal_address, parse_target, refusal, resolve, system_resolver

RETRYABLE_STATUS = {408, 429}
# How long a host's lookup is kept (see HttpSender), and for how many hosts at most.
RESOLVE_TTL_SECONDS = 5.0
MAX_KEPT_LOOKUPS = 4096


@dataclass(frozen=True)
class DeliveryResult:
    ok: bool
    retryable: bool
    error: str | None = None
    status_code: int | None = None
    retry_after: str | None = None
    # The target may not be called (it resolves inside the network): trying again cannot help.
    refused: bool = False


def classify(status_code: int) -> DeliveryResult:
    if 200 <= status_code < 300:
        return DeliveryResult(ok=True, retryable=False, status_code=status_code)
    retryable = status_code in RETRYABLE_STATUS or status_code >= 500
    return DeliveryResult(
        ok=False, retryable=retryable, error=f"HTTP {status_code}", status_code=status_code
    )


class HttpSender:
    """POSTs JSON bodies over thread-safe pools of keep-alive connections, one pool per host and
    checked address.

    urllib3 directly rather than requests: a dispatch batch delivers on fresh threads, so
    per-thread sessions never reused a connection, and every requests call also looked up
    netrc, proxy variables and the CA bundle on disk. A webhook sender wants none of that:
    no cookies, no redirects followed, no proxies picked up from the environment.

    Each call resolves the host once, checks every address it resolves to, and connects to a
    checked one: urllib3's pool is made for the address (so it never looks the name up again),
    with the name as TLS server name (SNI and the certificate's hostname check) and as Host
    header. A host that resolves elsewhere next time gets another pool, so a kept-alive socket
    is only ever reused for the address it was checked for (DNS rebinding cannot move a call,
    nor a pooled connection, inside the network). A lookup is kept `resolve_ttl` seconds (a
    burst to one host would otherwise cost a lookup per request); what it kept is checked again
    at every call, and the call still goes to the address it holds.
    """

    def __init__(
        self,
        timeout_seconds: float,
        *,
        allow_internal: bool,
        resolver: Resolver = system_resolver,
        max_per_host: int = 64,
        resolve_ttl: float = RESOLVE_TTL_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
        ca_certs: str | None = None,
    ) -> None:
        self._timeout = timeout_seconds
        self._allow_internal = allow_internal
        self._resolver = resolver
        self._max_per_host = max_per_host
        self._resolve_ttl = resolve_ttl
        self._monotonic = monotonic
        # Keyed by urllib3 on (scheme, address, port, server_hostname): one pool per host and
        # address. `ca_certs`: a CA bundle to verify HTTPS targets against instead of the system's.
        self._pool = pool_manager(num_pools=256, maxsize=max_per_host, retries=False, ca_certs=ca_certs)
        self._lookups: dict[tuple[str, int], tuple[float, list[str]]] = {}

    def _addresses(self, target: Target) -> list[str]:
        """The target's addresses (none: it does not resolve), looked up at most every
        `resolve_ttl` seconds."""
        literal = literal_address(target.host)
        if literal is not None:
            return [literal]
        key = (target.host, target.port)
        now = self._monotonic()
        kept = self._lookups.get(key)
        if kept is not None and kept[0] > now:
            return kept[1]
        addresses = list(dict.fromkeys(resolve(target.host, target.port, self._resolver)))
        if addresses:  # a failed lookup is not kept: the next call asks again
            if len(self._lookups) >= MAX_KEPT_LOOKUPS:
                self._lookups.clear()
            self._lookups[key] = (now + self._resolve_ttl, addresses)
        return addresses

    def _checked(self, url: str, field: str) -> tuple[Target, list[str]] | DeliveryResult:
        """The target and the addresses it may be called at, or why it may not be called."""
        try:
            target = parse_target(url, field)
        except BadRequest as exc:
            return DeliveryResult(ok=False, retryable=False, error=exc.message, refused=True)
        addresses = self._addresses(target)
        if not addresses:
            # Retried: a failed lookup may be a passing failure of DNS.
            return DeliveryResult(ok=False, retryable=True,
                                  error=f"connection failed: {field} host does not resolve")
        # Checked at every call, not only when the URL was accepted: DNS may have changed since.
        reason = refusal(target.host, addresses, field, allow_internal=self._allow_internal)
        if reason:
            return DeliveryResult(ok=False, retryable=False, error=reason, refused=True)
        return target, addresses

    def _pool_for(self, target: Target, address: str) -> HTTPConnectionPool:
        return self._pool.connection_from_host(
            address, target.port, target.scheme, pool_kwargs={"server_hostname": target.host}
        )

    def warm(self, url: str, connections: int, timeout: float, executor: Executor) -> int:
        """Have `connections` kept-alive connections to `url`'s host open within `timeout`;
        returns how many it opened in that time.

        Called ahead of a due instant, while the delivery threads would only wait: requests at
        that instant then skip the TCP (and TLS) handshake, which otherwise all of a burst's
        first requests pay at once. Best effort: a connection that cannot be opened now is
        opened by its request. The connections go to the address the requests will use (the
        lookup is kept for them), checked as theirs are. urllib3 has no public call for this, so
        it borrows connections the way urlopen does (all at once, so that each is a different
        one) and opens the closed ones on `executor`, each given back when it is done. A name
        lookup has no timeout of its own, so it runs on `executor` too and the caller waits at
        most `timeout` for it and goes on; a lookup that hangs holds one executor thread, as the
        request itself would.
        """
        started = time.monotonic()
        lookup = executor.submit(self._checked, url, "url")
        if not futures.wait([lookup], timeout=timeout).done:
            return 0
        checked = lookup.result()
        if isinstance(checked, DeliveryResult):
            return 0
        target, addresses = checked
        try:
            pool = self._pool_for(target, addresses[0])
            borrowed = [pool._get_conn() for _ in range(min(connections, self._max_per_host))]
        except (urllib3.exceptions.HTTPError, ValueError):
            return 0
        left = timeout - (time.monotonic() - started)

        def open_(conn: Any) -> bool:
            try:
                conn.timeout = left
                conn.connect()
                return True
            except Exception:  # OSError, urllib3's errors: best effort, never fatal
                conn.close()  # it goes back closed: its request opens it
                return False
            finally:
                pool._put_conn(conn)

        opening = []
        for conn in borrowed:
            if conn.is_connected:
                pool._put_conn(conn)
            else:
                opening.append(executor.submit(open_, conn))
        done, _ = futures.wait(opening, timeout=max(left, 0))
        return sum(1 for future in done if future.result())

    def post(
        self, url: str, body: bytes, headers: dict[str, str], field: str, timeout: float | None = None
    ) -> DeliveryResult:
        """POST to `url` (named `field` in a refusal), unless it now resolves inside the network."""
        checked = self._checked(url, field)
        if isinstance(checked, DeliveryResult):
            return checked
        target, addresses = checked
        timeout = timeout or self._timeout
        headers = {**headers, "Host": target.host_header}
        try:
            with deadline(timeout) as at:
                response = self._post_to_first(target, addresses, body, headers, at)
                # The answer's body is not ours to keep; read it so the connection can be reused.
                response.drain_conn()
                if passed(at):
                    response.close()  # cut off mid-body: the connection cannot be reused
                response.release_conn()
        except urllib3.exceptions.NewConnectionError as exc:
            # Before TimeoutError: urllib3 makes a refused connection a kind of connect timeout.
            return DeliveryResult(ok=False, retryable=True, error=f"connection failed: {type(exc).__name__}")
        except urllib3.exceptions.TimeoutError:
            return DeliveryResult(ok=False, retryable=True, error=f"timed out after {timeout:g} s")
        except (urllib3.exceptions.HTTPError, ValueError) as exc:
            # ValueError: a URL urllib3 cannot use (checked at intake, but kept safe here).
            return DeliveryResult(ok=False, retryable=True, error=f"connection failed: {type(exc).__name__}")
        result = classify(response.status)
        if result.ok:
            return result
        return DeliveryResult(
            ok=False,
            retryable=result.retryable,
            error=result.error,
            status_code=response.status,
            retry_after=response.headers.get("Retry-After"),
        )

    def _post_to_first(
        self, target: Target, addresses: list[str], body: bytes, headers: dict[str, str], at: float
    ) -> BaseHTTPResponse:
        """POST at the first of the checked addresses that takes a connection, as urllib3 tries
        each address a name resolves to (a host's IPv6 address may be unreachable from here).
        Only a connection that failed moves on to the next address: nothing was sent on it."""
        for address in addresses[:-1]:
            try:
                return self._post_at(target, address, body, headers, at)
            except urllib3.exceptions.NewConnectionError:
                if passed(at):
                    raise
        return self._post_at(target, addresses[-1], body, headers, at)

    def _post_at(
        self, target: Target, address: str, body: bytes, headers: dict[str, str], at: float
    ) -> BaseHTTPResponse:
        return self._pool_for(target, address).urlopen(
            "POST", target.request_uri, body=body, headers=headers,
            timeout=urllib3.Timeout(total=max(at - time.monotonic(), 0.001)),
            redirect=False, retries=False, preload_content=False, assert_same_host=False,
        )
