"""The merchandiser review UI under ``/review``: server-rendered pages (``service.ui.routes``),
our own CSS/JS (``static/``) and third-party front-end files (``vendor/``).

Third-party files come from the npm registry at install time: ``vendor/package.json`` and
its ``package-lock.json`` (exact versions, integrity hashes) are installed by
``scripts/bootstrap.sh`` with ``npm ci`` into ``vendor/node_modules``, which is never
committed. The app serves only the files named in ``VENDOR_FILES`` from there and never
points a page at a CDN. Without the install the pages still work: htmx only makes the
queue's filters refresh without a full page load.

Every ``/review`` response carries the security headers in ``SECURITY_HEADERS``: the CSP
(``service.ui.csp``) allows scripts and styles from this origin only (no inline script, no
``style`` attributes) and no framing; a job page with a 3D model carries its own, slightly
wider policy for the viewer, which the middleware leaves in place.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Response
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.ui import routes
from service.ui.csp import CSP

HERE = Path(__file__).resolve().parent
VENDOR = HERE / "vendor" / "node_modules"
# name served under /review/vendor/ -> file in node_modules (what the pages load)
VENDOR_FILES = {
    "htmx.min.js": "htmx.org/dist/htmx.min.js",
    # the ES module build with three.js inside: one file, no import map needed
    "model-viewer.min.js": "@google/model-viewer/dist/model-viewer.min.js",
}
SECURITY_HEADERS = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
)


class SecurityHeaders:
    """Adds ``SECURITY_HEADERS`` to responses under ``/review`` (pure ASGI, so streamed
    responses elsewhere in the app are left alone)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == "/review" or path.startswith("/review/")):
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(n, v) for n, v in SECURITY_HEADERS if n not in names]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, with_headers)


def vendor_file(name: str) -> Response:
    relative = VENDOR_FILES.get(name)
    path = VENDOR / relative if relative else None
    if path is None or not path.is_file():
        return Response(status_code=404)
    # the lock pins the bytes; a new install changes the name's content only on upgrade
    return FileResponse(path, headers={"Cache-Control": "public, max-age=3600"})


def install_ui(app: FastAPI) -> None:
    app.add_middleware(SecurityHeaders)
    app.mount("/review/static", StaticFiles(directory=HERE / "static"), name="review-static")
    app.add_api_route(
        "/review/vendor/{name}", vendor_file, methods=["GET"], include_in_schema=False
    )
    app.include_router(routes.router)
