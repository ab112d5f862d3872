"""Fetch URLs that callers chose, without letting them reach our own network (SSRF).

Everything skuforge fetches or posts on a caller's behalf goes through this module: capture
``image_url``s, store-webhook product images and batch rows (``fetch_image``), and outbound
webhook deliveries (``safe_request``).

**What is refused** (``UrlNotAllowedError``, code ``url_not_allowed``, with a ``reason``):
schemes other than http(s); credentials in the URL (``user:pass@``); hosts written as
decimal, octal or hex numbers (``2130706433``, ``0x7f.1``, ``0177.0.0.1``: resolvers accept
them, so they would slip past a check on the text); and any address, literal or resolved,
that is loopback, private, link-local, CGNAT (100.64/10), multicast, reserved, unspecified
(``0.0.0.0``, ``::``), or a cloud metadata endpoint, for IPv4 and IPv6 alike, including IPv4
addresses embedded in IPv6 (``::ffff:127.0.0.1``, 6to4 ``2002::/16``, NAT64 ``64:ff9b::/96``).
``allow_private=True`` (the operator's ``SKUFORGE_API__ALLOW_PRIVATE_URLS``, for tests and
intranet DAMs) lifts the address categories except unspecified, multicast and metadata,
which are never a place to fetch a photo from; ``allow_networks`` lifts them for listed
networks only.

**Resolve once, connect to what was vetted.** Each hop resolves its host exactly once (the
injectable ``resolver``), checks every address, and connects to those addresses and nothing
else: the connection pool's network backend ignores the host name it is handed and dials
the vetted IP, then checks the peer address the socket actually reached. A DNS-rebinding
name (public on the first lookup, loopback on the second) therefore never gets a second
lookup. For https the TLS layer still gets the host name, so SNI and certificate checks
are unchanged, and the ``Host`` header is the URL's. Redirects are followed by hand, at most
``MAX_REDIRECTS``, each hop vetted the same way. Proxy environment variables are not read
(a proxy would do its own resolution). Bodies are read raw: ``Accept-Encoding: identity``,
nothing is decompressed, so the byte cap is the real cap.

**A total deadline, not a per-read timeout.** ``deadline_s`` covers resolution, connecting,
TLS, every redirect and the whole body: every socket operation gets the time left, so a
server that trickles one byte every 8 s is cut at the deadline (``FetchTimeoutError``).

The functions:

- ``check_url(url, *, allow_private=False, allow_networks=())``: the checks that need no DNS
  (scheme, credentials, encoded hosts, a literal IP host). The API runs it at submission so
  a literal private address is refused at once.
- ``check_public_url(url, *, allow_private=False, allow_networks=(), resolver=None,
  deadline_s=5.0) -> list[address]``: the same plus one resolution, every address vetted
  (e.g. when an outbound webhook endpoint is registered).
- ``fetch_image(url, *, max_bytes, deadline_s, allow_private=False, allow_networks=(),
  resolver=None) -> FetchedImage``: GET with redirects, a byte cap (``PayloadTooLargeError``)
  and content sniffing (``NotAnImageError`` unless the bytes are JPEG/PNG/WebP/TIFF/HEIF);
  other failures are ``FetchFailedError`` (``fetch_failed``, with ``upstream_status`` for
  an HTTP error) or ``FetchTimeoutError`` (``fetch_timeout``).
- ``safe_request(method, url, *, content=b"", headers=None, deadline_s, allow_private=False,
  max_response_bytes=65536, allow_networks=(), resolver=None) -> SafeResponse``: one request,
  redirects *not* followed (a 3xx is returned to the caller, which for a webhook is a
  failure), and the response as ``(status, headers, body_excerpt, elapsed_s)``: at most
  ``max_response_bytes`` of the body are read, the rest is dropped with the connection.

All errors are ``InputError`` subclasses from ``pipeline.errors`` with stable codes.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import urljoin, urlsplit

import certifi
import httpcore

from pipeline.errors import (
    FetchFailedError,
    FetchTimeoutError,
    InputError,
    NotAnImageError,
    PayloadTooLargeError,
    UrlNotAllowedError,
)
from pipeline.stages.ingest import sniff_format

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# (host, port) -> the addresses the name has, as strings. Called once per hop.
Resolver = Callable[[str, int], Sequence[str]]

MAX_REDIRECTS = 5
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Enough to tell every supported image container from anything else (see sniff_format).
SNIFF_BYTES = 32
USER_AGENT = "skuforge-fetch/1"

# Cloud instance metadata: refused even when private addresses are allowed.
METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# What a resolver accepts as an IPv4 number (inet_aton): 1 to 4 parts, each decimal, octal
# (leading 0) or hex (0x). Only the canonical dotted quad is let through as an address.
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}\.?$", re.I)


class FetchedImage(NamedTuple):
    data: bytes
    url: str  # after redirects
    format: str  # from the magic bytes: JPEG, PNG, WEBP, TIFF, HEIF
    media_type: str | None  # what the server declared, for the record only
    redirects: int
    elapsed_s: float


class SafeResponse(NamedTuple):
    status: int
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body_excerpt: bytes
    elapsed_s: float


@dataclass(frozen=True)
class _Policy:
    allow_private: bool
    allow_networks: tuple[IPNetwork, ...]
    resolver: Resolver | None


@dataclass(frozen=True)
class _Target:
    """One hop: the URL, its host and port, and the addresses vetted for it."""

    url: str
    host: str
    port: int
    addresses: tuple[IPAddress, ...]


# -- address policy ------------------------------------------------------------------------
def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries to the IPv4 network, if any."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_refusal(
    address: IPAddress, *, allow_private: bool = False, allow_networks: Iterable[IPNetwork] = ()
) -> str | None:
    """Why ``address`` may not be contacted (a short reason), or None if it may."""
    if address in METADATA_ADDRESSES:
        return "metadata"
    if address.is_unspecified:
        return "unspecified"
    if address.is_multicast:
        return "multicast"
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        inner = address_refusal(
            embedded, allow_private=allow_private, allow_networks=allow_networks
        )
        if inner is not None:
            return f"{inner} (IPv4 {embedded} inside IPv6)"
    if allow_private or any(address in network for network in allow_networks):
        return None
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link_local"
    if isinstance(address, ipaddress.IPv4Address) and address in _CGNAT:
        return "cgnat"
    if address.is_private:
        return "private"
    if address.is_reserved:
        return "reserved"
    if not address.is_global:
        return "not_global"
    return None


def _refuse(url: str, reason: str, message: str) -> UrlNotAllowedError:
    return UrlNotAllowedError(message, reason=reason, url=url[:300])


def _parse(url: str) -> tuple[str, str, int, IPAddress | None]:
    """(scheme, host, port, literal address or None), or ``UrlNotAllowedError``."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise _refuse(url, "malformed", f"not a valid URL: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in {"http", "https"}:
        raise _refuse(url, "scheme", f"only http and https URLs are fetched, not {scheme!r}")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise _refuse(url, "credentials", "URLs with credentials (user:pass@) are not fetched")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise _refuse(url, "malformed", "the URL has no host")
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is None and _NUMERIC_HOST.match(host):
        raise _refuse(
            url, "encoded_ip", f"host {host!r} is a numeric IPv4 form; write a dotted quad"
        )
    if literal is not None and literal.version == 6 and getattr(literal, "scope_id", None):
        raise _refuse(url, "link_local", "IPv6 addresses with a zone are not fetched")
    return scheme, host, port or (443 if scheme == "https" else 80), literal


def _networks(allow_networks: Iterable[IPNetwork | str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(n) if isinstance(n, str) else n for n in allow_networks)


def check_url(
    url: str, *, allow_private: bool = False, allow_networks: Iterable[IPNetwork | str] = ()
) -> None:
    """Refuse what is wrong with ``url`` without resolving it (scheme, credentials, encoded
    hosts, a literal IP host that is not allowed). A name still needs ``check_public_url``
    or a fetch, which resolve it."""
    _, _, _, literal = _parse(url)
    if literal is not None:
        reason = address_refusal(
            literal, allow_private=allow_private, allow_networks=_networks(allow_networks)
        )
        if reason is not None:
            raise _refuse(url, reason, f"{literal} is not a public address ({reason})")


# -- resolution ----------------------------------------------------------------------------
_dns_lock = threading.Lock()
_dns_pool: ThreadPoolExecutor | None = None


def system_resolver(host: str, port: int) -> list[str]:
    """The operating system's answer for ``host`` (A and AAAA records)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _dns_executor() -> ThreadPoolExecutor:
    # getaddrinfo has no timeout of its own; a thread lets the deadline cut a stuck lookup.
    # Made lazily so a forked worker process builds its own threads.
    global _dns_pool
    with _dns_lock:
        if _dns_pool is None:
            _dns_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="skuforge-dns")
        return _dns_pool


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise FetchTimeoutError("the fetch ran out of time", reason="deadline")
    return left


def _resolve(host: str, port: int, policy: _Policy, deadline: float, url: str) -> list[IPAddress]:
    resolver = policy.resolver or system_resolver
    future = _dns_executor().submit(resolver, host, port)
    try:
        answers = future.result(timeout=_remaining(deadline))
    except FutureTimeout as exc:
        raise FetchTimeoutError(f"resolving {host} took too long", url=url[:300]) from exc
    except (OSError, UnicodeError) as exc:
        raise FetchFailedError(
            f"cannot resolve {host}: {exc}", reason="dns", url=url[:300]
        ) from exc
    addresses: list[IPAddress] = []
    for answer in answers:
        try:
            addresses.append(ipaddress.ip_address(str(answer).split("%", 1)[0]))
        except ValueError as exc:
            raise FetchFailedError(
                f"{host} resolved to {answer!r}", reason="dns", url=url[:300]
            ) from exc
    if not addresses:
        raise FetchFailedError(f"{host} has no addresses", reason="dns", url=url[:300])
    return addresses


def _vet(url: str, policy: _Policy, deadline: float) -> _Target:
    """Parse, resolve once, and check every address: the hop's only possible peers."""
    _, host, port, literal = _parse(url)
    addresses = [literal] if literal is not None else _resolve(host, port, policy, deadline, url)
    for address in addresses:
        reason = address_refusal(
            address, allow_private=policy.allow_private, allow_networks=policy.allow_networks
        )
        if reason is not None:
            # One bad answer refuses the name: a mix of public and private answers is
            # exactly what a rebinding or split-horizon attack looks like.
            raise _refuse(url, reason, f"{host} is (or resolves to) {address}: {reason}")
    return _Target(url, host, port, tuple(addresses))


def check_public_url(
    url: str,
    *,
    allow_private: bool = False,
    allow_networks: Iterable[IPNetwork | str] = (),
    resolver: Resolver | None = None,
    deadline_s: float = 5.0,
) -> list[IPAddress]:
    """The addresses ``url``'s host resolves to now, each one allowed; else
    ``UrlNotAllowedError`` (or ``FetchFailedError`` when the name does not resolve).
    A later fetch resolves again and checks again: this is for early feedback only."""
    policy = _Policy(allow_private, _networks(allow_networks), resolver)
    return list(_vet(url, policy, time.monotonic() + deadline_s).addresses)


# -- the pinned connection -----------------------------------------------------------------
class _DeadlineStream(httpcore.NetworkStream):
    """A socket stream whose every operation gets at most the time left before the deadline."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: float) -> None:
        self._inner, self._deadline = inner, deadline

    def _timeout(self, asked: float | None, error: type[Exception]) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise error("deadline reached")
        return left if asked is None else min(asked, left)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._timeout(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._timeout(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        tls = self._inner.start_tls(
            ssl_context, server_hostname, self._timeout(timeout, httpcore.ConnectTimeout)
        )
        return _DeadlineStream(tls, self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _PinnedBackend(httpcore.NetworkBackend):
    """Dials only the hop's vetted addresses, whatever host name the pool asks for, and
    checks the address the socket is really connected to."""

    def __init__(self, target: _Target, policy: _Policy, deadline: float) -> None:
        self._target, self._policy, self._deadline = target, policy, deadline
        self._tcp = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        if port != self._target.port:  # the pool only ever serves the hop's origin
            raise httpcore.ConnectError(f"unexpected port {port}")
        last: Exception | None = None
        for address in self._target.addresses:
            left = self._deadline - time.monotonic()
            if left <= 0:
                raise httpcore.ConnectTimeout("deadline reached")
            try:
                stream = self._tcp.connect_tcp(
                    str(address),
                    port,
                    timeout=left if timeout is None else min(timeout, left),
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
                continue
            self._check_peer(stream, address)
            return _DeadlineStream(stream, self._deadline)
        assert last is not None
        raise last

    def _check_peer(self, stream: httpcore.NetworkStream, vetted: IPAddress) -> None:
        peer = ipaddress.ip_address(str(stream.get_extra_info("server_addr")[0]).split("%")[0])
        reason = address_refusal(
            peer,
            allow_private=self._policy.allow_private,
            allow_networks=self._policy.allow_networks,
        )
        if peer != vetted or reason is not None:
            stream.close()
            raise _refuse(
                self._target.url,
                reason or "peer_mismatch",
                f"connected to {peer}, not the vetted {vetted}",
            )

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are never fetched")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


_ssl_lock = threading.Lock()
_ssl_context: ssl.SSLContext | None = None


def _tls() -> ssl.SSLContext:
    global _ssl_context
    with _ssl_lock:
        if _ssl_context is None:
            _ssl_context = ssl.create_default_context(cafile=certifi.where())
        return _ssl_context


@contextmanager
def _exchange(
    target: _Target,
    policy: _Policy,
    deadline: float,
    method: str,
    headers: dict[str, str],
    content: bytes,
) -> Iterator[httpcore.Response]:
    """One request to one vetted hop; httpcore errors become our typed errors."""
    left = _remaining(deadline)
    timeouts = {"connect": left, "read": left, "write": left, "pool": left}
    pool = httpcore.ConnectionPool(
        ssl_context=_tls(),
        max_connections=1,
        retries=0,
        network_backend=_PinnedBackend(target, policy, deadline),
    )
    request_headers = {
        "User-Agent": USER_AGENT,
        "Accept-Encoding": "identity",
        "Connection": "close",
        **headers,
    }
    try:
        with (
            pool,
            pool.stream(
                method,
                target.url,
                headers=list(request_headers.items()),
                content=content or None,
                extensions={"timeout": timeouts},
            ) as response,
        ):
            yield response
    except httpcore.TimeoutException as exc:
        raise FetchTimeoutError(
            f"{target.host} did not answer in time", url=target.url[:300]
        ) from exc
    except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol) as exc:
        raise FetchFailedError(
            f"could not fetch from {target.host}: {type(exc).__name__}: {exc}",
            reason="connection",
            url=target.url[:300],
        ) from exc
    except ssl.SSLError as exc:
        raise FetchFailedError(
            f"TLS with {target.host} failed: {exc}", reason="tls", url=target.url[:300]
        ) from exc


def _headers(response: httpcore.Response) -> dict[str, str]:
    merged: dict[str, str] = {}
    for raw_name, raw_value in response.headers:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        merged[name] = f"{merged[name]}, {value}" if name in merged else value
    return merged


def _chunks(response: httpcore.Response, deadline: float) -> Iterator[bytes]:
    for chunk in response.iter_stream():
        yield chunk
        _remaining(deadline)


# -- the public entry points ---------------------------------------------------------------
def fetch_image(
    url: str,
    *,
    max_bytes: int,
    deadline_s: float,
    allow_private: bool = False,
    allow_networks: Iterable[IPNetwork | str] = (),
    resolver: Resolver | None = None,
    max_redirects: int = MAX_REDIRECTS,
) -> FetchedImage:
    """The image at ``url`` (following at most ``max_redirects`` redirects), or a typed
    error; see the module docstring for what is refused and why."""
    started = time.monotonic()
    deadline = started + deadline_s
    policy = _Policy(allow_private, _networks(allow_networks), resolver)
    current = url
    for hop in range(max_redirects + 1):
        target = _vet(current, policy, deadline)
        with _exchange(target, policy, deadline, "GET", {"Accept": "image/*"}, b"") as response:
            status = response.status
            headers = _headers(response)
            if status in REDIRECT_STATUSES:
                location = headers.get("location")
                if not location:
                    raise FetchFailedError(
                        f"HTTP {status} without a Location", upstream_status=status, url=current
                    )
                current = urljoin(current, location.strip())
                continue
            if status != 200:
                raise FetchFailedError(
                    f"the server answered HTTP {status}", upstream_status=status, url=current
                )
            declared = headers.get("content-length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise PayloadTooLargeError(
                    f"the image is {declared} bytes; at most {max_bytes} are fetched",
                    limit=max_bytes,
                    url=current,
                )
            body = bytearray()
            sniffed: str | None = None
            for chunk in _chunks(response, deadline):
                body += chunk
                if len(body) > max_bytes:
                    raise PayloadTooLargeError(
                        f"the image is over {max_bytes} bytes", limit=max_bytes, url=current
                    )
                if sniffed is None and len(body) >= SNIFF_BYTES:
                    sniffed = _sniff(bytes(body), current)  # refuse a non-image early
            data = bytes(body)
            image_format = sniffed or _sniff(data, current)
            return FetchedImage(
                data,
                current,
                image_format,
                headers.get("content-type"),
                hop,
                time.monotonic() - started,
            )
    raise FetchFailedError(
        f"more than {max_redirects} redirects", reason="too_many_redirects", url=url[:300]
    )


def _sniff(data: bytes, url: str) -> str:
    try:
        return sniff_format(data)
    except InputError as exc:
        raise NotAnImageError(
            f"the URL did not return an image: {exc.message}",
            detected=exc.detail.get("detected", "empty" if not data else "unknown"),
            url=url[:300],
        ) from exc


def safe_request(
    method: str,
    url: str,
    *,
    content: bytes = b"",
    headers: dict[str, str] | None = None,
    deadline_s: float,
    allow_private: bool = False,
    max_response_bytes: int = 64 * 1024,
    allow_networks: Iterable[IPNetwork | str] = (),
    resolver: Resolver | None = None,
) -> SafeResponse:
    """One ``method`` request to ``url`` under the same address rules as ``fetch_image``.
    Redirects are returned, not followed. Raises ``UrlNotAllowedError``,
    ``FetchFailedError`` or ``FetchTimeoutError``; any HTTP status is a result."""
    started = time.monotonic()
    deadline = started + deadline_s
    policy = _Policy(allow_private, _networks(allow_networks), resolver)
    target = _vet(url, policy, deadline)
    with _exchange(target, policy, deadline, method.upper(), headers or {}, content) as response:
        excerpt = bytearray()
        for chunk in _chunks(response, deadline):
            excerpt += chunk
            if len(excerpt) >= max_response_bytes:
                break  # the rest goes with the connection, which is never reused
        return SafeResponse(
            response.status,
            _headers(response),
            bytes(excerpt[:max_response_bytes]),
            time.monotonic() - started,
        )
