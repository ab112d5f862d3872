"""``/docs``: Swagger UI served from files installed with skuforge, so it works offline.

FastAPI's built-in page loads Swagger UI's JavaScript and CSS from a CDN, which leaves
``/docs`` blank on an air-gapped host or behind a strict proxy. The same files ship in the
``swagger-ui-bundle-v2`` package (Swagger UI 5, Apache-2.0); they are mounted under
``/docs/static`` and the page points at them. The online validator badge is switched off,
since Swagger UI would otherwise fetch it from swagger.io for any non-localhost host.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_URL = "/docs"
STATIC_URL = "/docs/static"


class SwaggerUiMissingError(RuntimeError):
    """The Swagger UI files are not installed (the swagger-ui-bundle-v2 dependency)."""


def swagger_ui_dir() -> Path:
    """The folder holding ``swagger-ui-bundle.js``, ``swagger-ui.css`` and the favicons."""
    try:
        bundle = importlib.import_module("swagger_ui_bundle")
    except ImportError as exc:
        raise SwaggerUiMissingError(
            "swagger_ui_bundle is not importable: install skuforge's dependencies "
            "(./scripts/bootstrap.sh) to serve /docs"
        ) from exc
    folder = Path(str(bundle.swagger_ui_path))
    if not (folder / "swagger-ui-bundle.js").is_file():
        raise SwaggerUiMissingError(f"no swagger-ui-bundle.js in {folder}")
    return folder


def install_docs(app: FastAPI, *, title: str, openapi_url: str = "/openapi.json") -> None:
    """Serve Swagger UI at ``/docs`` (create the app with ``docs_url=None``)."""
    app.mount(STATIC_URL, StaticFiles(directory=swagger_ui_dir()), name="swagger-ui-static")

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        # behind a proxy that strips a path prefix, every URL in the page needs it back
        root = str(request.scope.get("root_path", "")).rstrip("/")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{title} - API docs",
            swagger_js_url=f"{root}{STATIC_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{STATIC_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{STATIC_URL}/favicon-32x32.png",
            swagger_ui_parameters={"validatorUrl": None},
        )
