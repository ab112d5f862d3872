"""The floor for ``POST /v1/captures``: a bare FastAPI endpoint that only streams the upload
to disk and sends one Celery message. ``benchmarks.service_load`` serves it with uvicorn
next to the real API, so both are measured with the same server, client and machine."""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

from celery import Celery
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

SPOOL = os.environ.get("FLOOR_SPOOL", tempfile.gettempdir())
celery = Celery("floor", broker=os.environ.get("FLOOR_BROKER_URL", "redis://127.0.0.1:6379/0"))
app = FastAPI()


@app.post("/floor")
async def floor(request: Request) -> JSONResponse:
    name = str(Path(SPOOL) / uuid.uuid4().hex)
    with open(name, "wb") as out:
        async for chunk in request.stream():
            out.write(chunk)
    celery.send_task("floor.noop", args=[name], queue="floor")
    return JSONResponse({"id": name}, status_code=202)
