"""Where generative backends run, in which precision, with which random numbers.

* Device: CUDA, then Apple's MPS, then the CPU. Half precision on a GPU (bf16 where the
  card has it, else fp16), float32 on the CPU (CPU half precision is slow and not what the
  tests prove).
* Seeds: one ``torch.Generator`` per invocation, seeded from the job seed and the
  invocation id (``generator_seed``), so two slots of one job differ and a re-run of the
  same invocation repeats. On MPS the generator lives on the CPU (MPS generators do not
  reproduce across runs).
* A worker that consumes the ``gpu`` queue must have a GPU: ``gpu_worker_problem`` says why
  it must not start, unless ``SKUFORGE_MODELS__ALLOW_CPU`` is set for development.
* ``GpuMeter`` measures a stage's device seconds and peak device memory for the lineage.

torch is imported inside the functions: the API process imports this module's callers
without ever loading torch (tests/test_layering.py).
"""

from __future__ import annotations

import hashlib
import time
from types import TracebackType
from typing import Any

GPU_QUEUE = "gpu"


def generator_seed(seed: int, invocation_id: str) -> int:
    """A 63-bit seed from the job seed and the invocation id (stable across processes,
    unlike ``hash``)."""
    digest = hashlib.sha256(f"{seed}\0{invocation_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


def pick_device() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def dtype_for(device: str) -> Any:
    import torch

    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == "mps":
        return torch.float16
    return torch.float32


def make_generator(device: str, seed: int, invocation_id: str) -> Any:
    import torch

    on = "cuda" if device == "cuda" else "cpu"
    return torch.Generator(on).manual_seed(generator_seed(seed, invocation_id))


def gpu_worker_problem(queues: list[str], allow_cpu: bool) -> str | None:
    """Why a worker for ``queues`` must not start here, or None. A ``gpu`` worker without a
    GPU would run every generative stage on the CPU, hundreds of times slower, and silently;
    so it refuses to start unless the operator allowed it for development."""
    if GPU_QUEUE not in queues or allow_cpu:
        return None
    try:
        device = pick_device()
    except ImportError:
        return (
            "this worker consumes the 'gpu' queue but torch is not installed: install "
            "skuforge[gpu] (docker/Dockerfile.gpu) on a machine with a GPU"
        )
    if device == "cpu":
        return (
            "this worker consumes the 'gpu' queue but no GPU is available (neither CUDA nor "
            "MPS): start it on a GPU machine, or set SKUFORGE_MODELS__ALLOW_CPU=true to run "
            "generative stages on the CPU for development"
        )
    return None


class GpuMeter:
    """Device seconds (wall time, synchronised on CUDA) and peak device memory of a block."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.seconds = 0.0
        self.peak_mb: float | None = None

    def __enter__(self) -> GpuMeter:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self._t0 = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()
            self.peak_mb = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        self.seconds = time.perf_counter() - self._t0

    def record(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "gpu_s": round(self.seconds, 4) if self.device != "cpu" else 0.0,
            "device_s": round(self.seconds, 4),
            "peak_vram_mb": self.peak_mb,
        }
