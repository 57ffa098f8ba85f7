"""The outbound HTTP client: POSTs webhooks and agent calls, refusing targets inside the network."""

from __future__ import annotations

from concurrent import futures
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import urllib3

from .deadline_http import deadline, passed, pool_manager
from .errors import BadRequest
from .targets import Resolver, check_target_url, system_resolver

RETRYABLE_STATUS = {408, 429}


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
    """POSTs JSON bodies over one thread-safe pool of keep-alive connections per host.

    urllib3 directly rather than requests: a dispatch batch delivers on fresh threads, so
    per-thread sessions never reused a connection, and every requests call also looked up
    netrc, proxy variables and the CA bundle on disk. A webhook sender wants none of that:
    no cookies, no redirects followed, no proxies picked up from the environment.
    """

    def __init__(
        self,
        timeout_seconds: float,
        *,
        allow_internal: bool,
        resolver: Resolver = system_resolver,
        max_per_host: int = 64,
    ) -> None:
        self._timeout = timeout_seconds
        self._allow_internal = allow_internal
        self._resolver = resolver
        self._max_per_host = max_per_host
        self._pool = pool_manager(num_pools=256, maxsize=max_per_host, retries=False)

    def warm(self, url: str, connections: int, timeout: float, executor: Executor) -> int:
        """Have `connections` kept-alive connections to `url`'s host open within `timeout`;
        returns how many it opened in that time.

        Called ahead of a due instant, while the delivery threads would only wait: requests at
        that instant then skip the TCP (and TLS) handshake, which otherwise all of a burst's
        first requests pay at once. Best effort: a connection that cannot be opened now is
        opened by its request. urllib3 has no public call for this, so it borrows connections
        the way urlopen does (all at once, so that each is a different one) and opens the closed
        ones on `executor`, each given back when it is done. Name lookups (the connect's and the
        internal-address check's) have no timeout of their own, so the caller waits at most
        `timeout` for them and goes on; a lookup that hangs holds one executor thread, as the
        request itself would.
        """
        try:
            pool = self._pool.connection_from_url(url)
            borrowed = [pool._get_conn() for _ in range(min(connections, self._max_per_host))]
        except (urllib3.exceptions.HTTPError, ValueError):
            return 0

        def open_(conn: Any) -> bool:
            try:
                if not self._allow_internal:
                    check_target_url(url, "url", allow_internal=False, resolver=self._resolver)
                conn.timeout = timeout
                conn.connect()
                return True
            except Exception:  # BadRequest, OSError, urllib3's errors: best effort, never fatal
                conn.close()  # it goes back closed: its request opens it (or is refused)
                return False
            finally:
                pool._put_conn(conn)

        opening = []
        for conn in borrowed:
            if conn.is_connected:
                pool._put_conn(conn)
            else:
                opening.append(executor.submit(open_, conn))
        done, _ = futures.wait(opening, timeout=timeout)
        return sum(1 for future in done if future.result())

    def post(
        self, url: str, body: bytes, headers: dict[str, str], field: str, timeout: float | None = None
    ) -> DeliveryResult:
        """POST to `url` (named `field` in a refusal), unless it now resolves inside the network."""
        if not self._allow_internal:
            # Checked again at every call, not only when the URL was accepted: DNS may
            # have changed since (DNS rebinding into the network Punctual runs in).
            try:
                check_target_url(url, field, allow_internal=False, resolver=self._resolver)
            except BadRequest as exc:
                return DeliveryResult(ok=False, retryable=False, error=exc.message, refused=True)
        timeout = timeout or self._timeout
        try:
            with deadline(timeout) as at:
                response = self._pool.request(
                    "POST", url, body=body, headers=headers, timeout=urllib3.Timeout(total=timeout),
                    redirect=False, preload_content=False,
                )
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
