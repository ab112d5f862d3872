"""Reject request bodies over a size limit before they are read (413 problem+json), and
bodies that arrive too slowly (408).

A declared ``Content-Length`` over the limit is refused at once; a chunked body is counted
as it streams and cut off when it passes the limit, so an upload can never fill the disk
or memory of the API process whatever the client claims.

uvicorn has no timeout on a request body: a client dripping one byte every half second
holds a connection (and a spooled upload) for as long as it likes. So the body must keep
up a minimum pace: it may take ``grace_s`` plus one second per ``min_rate`` bytes
received so far; a body still incomplete after that is answered 408
``request_timeout`` with ``Connection: close``. A slow but real upload (a 64 MB photo at
64 KB/s) passes. Headers dripped before the app is called are beyond an ASGI app's reach:
run the API behind a proxy with a header timeout (nginx ``client_header_timeout``).
"""

from __future__ import annotations

import asyncio
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.problems import problem_response

GRACE_S = 30.0
MIN_RATE_BYTES_S = 64 * 1024


class BodyTooLargeError(Exception):
    pass


class BodyTooSlowError(Exception):
    pass


class BodySizeLimit:
    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        *,
        grace_s: float | None = None,
        min_rate: int = MIN_RATE_BYTES_S,
    ) -> None:
        self.app, self.max_bytes = app, max_bytes
        self.grace_s = GRACE_S if grace_s is None else grace_s
        self.min_rate = min_rate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_bytes
            except ValueError:
                too_big = False
            if too_big:
                await self._refuse(scope, receive, send)
                return
        seen = 0
        started = False
        begun = time.monotonic()
        complete = False

        async def counting_receive() -> Message:
            nonlocal seen, complete
            if complete:  # only http.disconnect is left to wait for, with no deadline
                return await receive()
            deadline = begun + self.grace_s + seen / self.min_rate
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise BodyTooSlowError from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if seen > self.max_bytes:
                    raise BodyTooLargeError
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLargeError:
            if not started:
                await self._refuse(scope, receive, send)
        except BodyTooSlowError:
            if not started:
                response = problem_response(
                    408,
                    "request_timeout",
                    "the request body arrived too slowly",
                    instance=scope.get("path"),
                    headers={"Connection": "close"},
                )
                await response(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(
            413,
            "payload_too_large",
            f"request body is larger than {self.max_bytes} bytes",
            instance=scope.get("path"),
            limit_bytes=self.max_bytes,
        )
        await response(scope, receive, send)
