"""The contract between stages and executors.

A stage is a pure function ``run(inputs, params, ctx) -> StageResult``: it gets the bytes of
its input artifacts, validated parameters and a context (seed, resolved backend, model
access), and returns new artifacts as bytes plus a small JSON ``info`` dict. It never touches
the store, the network or the filesystem; the executor does that, which is what lets the
same stage run in-process (CLI) or in a Celery worker, and be cached by its inputs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel


@dataclass(frozen=True)
class Blob:
    data: bytes
    media_type: str


@dataclass(frozen=True)
class StageResult:
    outputs: dict[str, Blob]
    info: dict[str, Any] = field(default_factory=dict)


class ModelProvider(Protocol):
    """Gives backends their loaded models; implementations cache and lock per process."""

    def rembg_session(self, model: str) -> Any: ...


@dataclass(frozen=True)
class StageContext:
    seed: int
    backend: str
    model_revision: str | None = None
    models: ModelProvider | None = None
    limits: Mapping[str, int] = field(default_factory=dict)
    progress: Callable[[float, str], None] | None = None

    def report(self, fraction: float, message: str = "") -> None:
        if self.progress is not None:
            self.progress(fraction, message)


class Stage(Protocol):
    name: str
    version: str
    params_model: type[BaseModel]
    input_names: tuple[str, ...]

    def run(
        self, inputs: Mapping[str, bytes], params: BaseModel, ctx: StageContext
    ) -> StageResult: ...


def canonical_json(value: Any) -> bytes:
    """JSON with sorted keys and no whitespace: the byte form that cache keys hash."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def json_blob(value: Any) -> Blob:
    return Blob(canonical_json(value), "application/json")
