"""JSON from clients, bounded before it is parsed.

Python's ``json`` and pydantic's parser both recurse per nesting level: a few kilobytes of
``[[[[...`` reach the interpreter's recursion limit, and where exactly depends on how deep
the stack already is, so the same body could pass one call and crash the next. Every JSON
value a client sends (a multipart ``sku``/``overrides`` field, a JSON body) is therefore
measured first, by a flat scan that never recurses: more than ``MAX_DEPTH`` levels or
``MAX_FIELD_BYTES`` bytes is a 4xx with its own code (``json_too_deep``,
``json_too_large``); text that is not JSON keeps its field's code (``invalid_sku``...) or
``invalid_json``. No real SKU, override
set or brand file comes near these numbers.
"""

from __future__ import annotations

import json
import re
from array import array
from collections.abc import Callable, Coroutine
from itertools import accumulate
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from service.problems import ProblemError

MAX_DEPTH = 32
MAX_FIELD_BYTES = 256 * 1024
MAX_BODY_BYTES = 2 * 1024 * 1024  # a JSON request body (brand rules, revisions, settings)
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# a JSON string with its escapes: brackets inside strings do not nest anything
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
# opening brackets to +1 and closing ones to -1 (as signed bytes), summed at C speed
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


def json_depth(raw: bytes | str) -> int:
    """The deepest nesting of arrays/objects in ``raw``, counted without parsing it (an
    unterminated string or unbalanced brackets still give a number; the parser refuses
    them afterwards)."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    brackets = _STRING.sub(b'""', data).translate(_STEPS, _NOT_BRACKETS)
    return max(accumulate(array("b", brackets)), default=0)


def check_json_bounds(raw: bytes | str, name: str, *, max_bytes: int = MAX_FIELD_BYTES) -> None:
    """Raise a 4xx ``ProblemError`` when ``raw`` is too big or nested too deep to parse."""
    size = len(raw)
    if size > max_bytes:
        raise ProblemError(
            413, "json_too_large", f"{name} is {size} bytes of JSON; at most {max_bytes}"
        )
    if json_depth(raw) > MAX_DEPTH:
        raise ProblemError(
            422,
            "json_too_deep",
            f"{name} nests arrays/objects more than {MAX_DEPTH} levels deep",
            max_depth=MAX_DEPTH,
        )


def parse_json_field(raw: str, name: str, code: str = "invalid_json") -> Any:
    """A client's JSON text as a value, or a 4xx: ``json_too_large``, ``json_too_deep``, or
    ``code`` when it is not JSON (the parser's message names a line and column)."""
    check_json_bounds(raw, name)
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ProblemError(422, code, f"{name} is not valid JSON: {exc}") from exc


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


class BoundedJsonRoute(APIRoute):
    """A route whose JSON body is measured (``check_json_bounds``) before FastAPI parses
    it; the body is read once and kept on the request, so the parser reads the same bytes.
    Use it as a router's ``route_class``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def bounded(request: Request) -> Response:
            if request.method in _BODY_METHODS and _is_json(
                request.headers.get("content-type", "")
            ):
                check_json_bounds(await request.body(), "the JSON body", max_bytes=MAX_BODY_BYTES)
            return await handler(request)

        return bounded
