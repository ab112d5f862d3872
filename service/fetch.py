"""Fetch a capture from ``image_url``: http(s) only, no private addresses, size-capped.

The API fetches on the caller's behalf, so it refuses what would let a caller probe the
internal network (loopback, private, link-local addresses, also after a redirect) unless
the operator allows it (``SKUFORGE_API__ALLOW_PRIVATE_URLS``, used by the tests and by
on-prem installs that fetch from an intranet DAM).
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urljoin, urlsplit

import httpx

from service.problems import ProblemError

MAX_REDIRECTS = 3


def _check_url(url: str, allow_private: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ProblemError(422, "invalid_image_url", "image_url must be an http(s) URL with a host")
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 443, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ProblemError(
            422, "fetch_failed", f"cannot resolve {parts.hostname}: {exc}", url=url
        ) from exc
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise ProblemError(
                422,
                "invalid_image_url",
                f"{parts.hostname} resolves to a non-public address",
                url=url,
            )


def fetch_capture(url: str, *, max_bytes: int, timeout_s: float, allow_private: bool) -> bytes:
    """The body at ``url``; typed 4xx problems for every way it can fail."""
    with httpx.Client(timeout=timeout_s, follow_redirects=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            _check_url(url, allow_private)
            try:
                with client.stream("GET", url, headers={"Accept": "image/*"}) as response:
                    if response.is_redirect and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        continue
                    if response.status_code != 200:
                        raise ProblemError(
                            422,
                            "fetch_failed",
                            f"image_url answered HTTP {response.status_code}",
                            url=url,
                        )
                    declared = response.headers.get("content-length")
                    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                        raise ProblemError(
                            413, "payload_too_large", "the image at image_url is too large"
                        )
                    chunks: list[bytes] = []
                    size = 0
                    for chunk in response.iter_bytes():
                        size += len(chunk)
                        if size > max_bytes:
                            raise ProblemError(
                                413, "payload_too_large", "the image at image_url is too large"
                            )
                        chunks.append(chunk)
                    return b"".join(chunks)
            except httpx.HTTPError as exc:
                raise ProblemError(
                    422, "fetch_failed", f"could not fetch image_url: {exc}", url=url
                ) from exc
    raise ProblemError(422, "fetch_failed", "too many redirects", url=url)
