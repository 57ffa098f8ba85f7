"""Rules for the URLs Punctual will POST to (webhook targets, agent endpoints).

Two layers use them: intake (`check_target_url`, a 400 naming the field) and every call
(`sender.HttpSender`, which resolves the host once, checks every address with `refusal` and
connects to a checked address, so DNS that changes between the check and the connect cannot
steer the call inside the network).
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from .errors import BadRequest

Resolver = Callable[[str, int], Iterable[str]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud metadata endpoints that are not covered by the link-local/private checks.
_METADATA_HOSTS = {"metadata.google.internal", "metadata", "instance-data"}
# Refused in every mode, local mode included: link-local space (where AWS, GCP and Azure serve
# instance metadata and ECS task credentials) and the metadata services outside it (AWS's IPv6
# one, Alibaba Cloud's). Local receivers never need them.
_NEVER = tuple(
    ipaddress.ip_network(net)
    for net in ("169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128", "100.100.100.200/32")
)
# IPv6 forms that carry an IPv4 address a connection may end up at: NAT64's well-known prefix
# (RFC 6052) and the deprecated IPv4-compatible form. (Mapped, 6to4 and Teredo have their own
# properties in ipaddress.)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_V4_COMPATIBLE = ipaddress.ip_network("::/96")
# Backslashes and control characters are not allowed in a URL (RFC 3986), and parsers read them
# differently: urllib3 takes the host of "http://127.0.0.1\@example.com/" to be 127.0.0.1,
# urllib.parse example.com. (Spaces urllib3 encodes itself.)
_UNSAFE = re.compile(r"[\\\x00-\x1f\x7f]")


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True)
class Target:
    """A URL taken apart as the sender uses it (urllib3's parser, so the host checked is the host
    called)."""

    url: str
    scheme: str
    host: str  # lower case, IPv6 without brackets
    port: int  # the URL's, else the scheme's default
    request_uri: str  # path and query; the fragment is never sent

    @property
    def host_header(self) -> str:
        """The Host header http.client would send for the URL (the name, not the address)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def parse_target(url: object, field: str) -> Target:
    """The URL's parts, or BadRequest naming `field` when it is not an http(s) URL we can call."""
    if not isinstance(url, str) or not url.strip():
        raise BadRequest(f"{field} must be a non-empty http(s) URL")
    url = url.strip()
    if len(url) > 2048:
        raise BadRequest(f"{field} is longer than 2048 characters")
    unsafe = _UNSAFE.search(url)
    if unsafe:
        raise BadRequest(f"{field} holds {unsafe.group()!r}, which a URL may not hold unencoded; "
                         "percent-encode it")
    try:
        parts = parse_url(url)
    except LocationParseError as exc:
        raise BadRequest(f"{field} is not a valid URL: {exc}") from None
    if parts.scheme not in {"http", "https"}:
        raise BadRequest(f"{field} must use http or https, got {parts.scheme or 'no scheme'!r}")
    host = (parts.host or "").strip("[]")
    if not host:
        raise BadRequest(f"{field} has no host: {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return Target(url, parts.scheme, host, port, parts.request_uri)


def literal_address(host: str) -> str | None:
    """The host as a canonical IP address when it is one (no lookup needed), else None."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def resolve(host: str, port: int, resolver: Resolver) -> list[str]:
    """The addresses a host stands for (the literal itself for an IP); empty if it does not
    resolve."""
    literal = literal_address(host)
    if literal is not None:
        return [literal]
    try:
        return [str(address) for address in resolver(host, port)]
    except (OSError, UnicodeError):
        return []


def _carried(ip: IPAddress) -> list[IPAddress]:
    """The address and every IPv4 address it embeds: a connection to any of them can reach it."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return [ip]
    found: list[IPAddress] = [ip]
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)  # the Teredo server and the client
    if ip in _NAT64 or (ip in _V4_COMPATIBLE and int(ip) > 1):  # not :: or ::1
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def _internal(ip: IPAddress) -> bool:
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
        or (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local)
    )


def _never(ip: IPAddress) -> bool:
    return any(ip.version == net.version and ip in net for net in _NEVER)


@functools.lru_cache(maxsize=4096)
def _classify(address: str) -> tuple[bool, bool]:
    """(refused in every mode, internal) for one address. A pure function of the address, kept
    so that the check every call makes costs a dictionary lookup."""
    carried = _carried(ipaddress.ip_address(address.split("%", 1)[0]))
    return any(_never(ip) for ip in carried), any(_internal(ip) for ip in carried)


def refusal(host: str, addresses: Sequence[str], field: str, *, allow_internal: bool) -> str | None:
    """Why `host`, resolved to `addresses`, may not be called (None: it may).

    The message never names an address: the caller learns that the host resolves inside the
    network, not where (it would map the network for whoever submits names).
    """
    if host.lower().rstrip(".") in _METADATA_HOSTS:
        return f"{field} points at a cloud metadata host ({host}), which is never allowed"
    for address in addresses:
        never, internal = _classify(address)
        if allow_internal and never:
            return (f"{field} resolves to a link-local or cloud metadata address, which is refused "
                    "even in local mode")
        if not allow_internal and internal:
            return (f"{field} resolves to an internal address (not a public one); only public hosts "
                    "are allowed")
    return None


def check_target_url(
    url: object,
    field: str,
    *,
    allow_internal: bool,
    resolver: Resolver = system_resolver,
) -> str:
    """Return the URL if Punctual may POST to it, else raise BadRequest naming the field.

    Outside local mode a target that resolves to loopback, private, link-local or metadata
    addresses is refused, so a tenant cannot make Punctual call into the network it runs in
    (SSRF). Local mode allows loopback and private addresses (local receivers need them), never
    link-local or metadata ones; a name that does not resolve yet is accepted there (a local
    receiver may not be up) and checked when it is called.
    """
    target = parse_target(url, field)
    addresses = resolve(target.host, target.port, resolver)
    if not addresses and not allow_internal:
        raise BadRequest(f"{field} host {target.host!r} does not resolve")
    reason = refusal(target.host, addresses, field, allow_internal=allow_internal)
    if reason:
        raise BadRequest(reason)
    return target.url


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
