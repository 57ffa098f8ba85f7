"""Rules for the URLs Punctual will POST to (webhook targets, agent endpoints)."""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable

from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from .errors import BadRequest

Resolver = Callable[[str, int], Iterable[str]]

# Cloud metadata endpoints that are not covered by the link-local/private checks.
_METADATA_HOSTS = {"metadata.google.internal", "metadata", "instance-data"}
# Backslashes and control characters are not allowed in a URL (RFC 3986), and parsers read them
# differently: urllib3 takes the host of "http://127.0.0.1\@example.com/" to be 127.0.0.1,
# urllib.parse example.com. (Spaces urllib3 encodes itself.)
_UNSAFE = re.compile(r"[\\\x00-\x1f\x7f]")


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _is_internal(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    # not is_global: is_private misses shared/carrier-grade NAT space (100.64.0.0/10),
    # where Alibaba Cloud's metadata service (100.100.100.200) lives.
    return (
        not ip.is_global
        or ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def check_target_url(
    url: object,
    field: str,
    *,
    allow_internal: bool,
    resolver: Resolver = system_resolver,
) -> str:
    """Return the URL if Punctual may POST to it, else raise BadRequest naming the field.

    Outside local mode a target that resolves to loopback, private, link-local or
    metadata addresses is refused, so a tenant cannot make Punctual call into
    the network it runs in (SSRF).
    """
    if not isinstance(url, str) or not url.strip():
        raise BadRequest(f"{field} must be a non-empty http(s) URL")
    url = url.strip()
    if len(url) > 2048:
        raise BadRequest(f"{field} is longer than 2048 characters")
    unsafe = _UNSAFE.search(url)
    if unsafe:
        raise BadRequest(f"{field} holds {unsafe.group()!r}, which a URL may not hold unencoded; "
                         "percent-encode it")
    # Parsed as the sender parses it (urllib3), so the host checked is the host called.
    try:
        parts = parse_url(url)
    except LocationParseError as exc:
        raise BadRequest(f"{field} is not a valid URL: {exc}") from None
    if parts.scheme not in {"http", "https"}:
        raise BadRequest(f"{field} must use http or https, got {parts.scheme or 'no scheme'!r}")
    host = (parts.host or "").strip("[]")
    if not host:
        raise BadRequest(f"{field} has no host: {url!r}")
    port = parts.port
    if allow_internal:
        return url
    _check_public(host, port or (443 if parts.scheme == "https" else 80), field, resolver)
    return url


def _check_public(host: str, port: int, field: str, resolver: Resolver) -> None:
    if host.lower() in _METADATA_HOSTS:
        raise BadRequest(f"{field} points at a cloud metadata host ({host}), which is not allowed")
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        try:
            addresses = list(resolver(host, port))
        except (OSError, UnicodeError):
            raise BadRequest(f"{field} host {host!r} does not resolve") from None
    if not addresses:
        raise BadRequest(f"{field} host {host!r} does not resolve")
    for address in addresses:
        if _is_internal(address):
            raise BadRequest(
                f"{field} resolves to an internal address ({address}); only public hosts are allowed"
            )


def destination(url: str) -> str:
    """Who a URL calls, as per-destination limits count it: scheme, host and port (`https://
    hooks.example.com:443`). A URL urllib3 cannot parse is its own destination."""
    try:
        parts = parse_url(url)
    except LocationParseError:
        return url
    scheme = (parts.scheme or "http").lower()
    port = parts.port or (443 if scheme == "https" else 80)
    return f"{scheme}://{(parts.host or '').lower()}:{port}"
