"""Typed errors. Each carries a stable machine-readable ``code`` that the API maps to
HTTP problem+json and the CLI prints; the message is for people."""

from __future__ import annotations

from typing import Any, ClassVar


class SkuforgeError(Exception):
    code: ClassVar[str] = "skuforge_error"
    http_status: ClassVar[int] = 500

    def __init__(self, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **self.detail}


class InputError(SkuforgeError):
    """The caller sent something we cannot use (4xx)."""

    code = "invalid_input"
    http_status = 422


class EmptyFileError(InputError):
    code = "empty_file"


class UnsupportedMediaTypeError(InputError):
    code = "unsupported_media_type"
    http_status = 415


class CorruptImageError(InputError):
    code = "corrupt_image"


class ImageTooLargeError(InputError):
    code = "image_too_large"
    http_status = 413


class ImageTooSmallError(InputError):
    code = "image_too_small"


class InvalidParameterError(InputError):
    code = "invalid_parameter"


class UnknownTemplateError(InputError):
    code = "unknown_template"
    http_status = 404


class InvalidSkuError(InputError):
    code = "invalid_sku"


class NoProductFoundError(InputError):
    """The cutout found nothing that differs from the backdrop."""

    code = "no_product_found"


class ModelUnavailableError(SkuforgeError):
    """A model backend was chosen but its weights are not on this machine (never downloaded)."""

    code = "model_unavailable"
    http_status = 503


class StageFailedError(SkuforgeError):
    """A stage raised something that is not one of ours: a bug, reported with its stage."""

    code = "stage_failed"

    @classmethod
    def from_bug(cls, stage: str, exc: BaseException) -> StageFailedError:
        """The job's error for an unexpected exception: clients read it, so it names only the
        stage and the exception type; the text (server paths, object reprs) stays in the log."""
        return cls(
            f"stage {stage} failed with an internal error ({type(exc).__name__});"
            " the worker's log has the details",
            stage=stage,
        )


class TransientError(SkuforgeError):
    """Worth retrying later (a dependency not yet visible, a busy resource)."""

    code = "transient"
    http_status = 503


class RetriesExhaustedError(SkuforgeError):
    """A stage kept failing with a transient error until its retries ran out."""

    code = "stage_retries_exhausted"
    http_status = 503


class PlanIncompatibleError(SkuforgeError):
    """A stored (pinned) plan cannot run in this process as it was planned."""

    code = "plan_incompatible"
    http_status = 409


class UnknownStageError(PlanIncompatibleError):
    """The plan names a stage this process has not registered."""

    code = "unknown_stage"


class StageVersionMismatchError(PlanIncompatibleError):
    """The plan was made for another version of a stage than the one registered here: its
    outputs (and cache keys) would differ from what was pinned."""

    code = "stage_version_mismatch"


# -- fetching URLs chosen by callers (pipeline.safe_fetch) ------------------------------------
class UrlNotAllowedError(InputError):
    """The URL may not be fetched: not http(s), credentials in it, a numerically encoded
    host, or a host that is (or resolves to) a non-public address; ``reason`` says which."""

    code = "url_not_allowed"


class FetchFailedError(InputError):
    """The URL could not be fetched: no such host, connection refused, an HTTP error status
    (``upstream_status``), a broken response or too many redirects."""

    code = "fetch_failed"


class FetchTimeoutError(FetchFailedError):
    """The fetch did not finish within its total deadline (resolution, connection, every
    redirect and the whole body together)."""

    code = "fetch_timeout"


class PayloadTooLargeError(InputError):
    """The fetched body is over the byte cap (declared or counted)."""

    code = "payload_too_large"
    http_status = 413


class NotAnImageError(InputError):
    """The URL answered with something that is not a supported image (sniffed bytes)."""

    code = "not_an_image"
    http_status = 415


class InvalidStorePayloadError(InputError):
    """A correctly signed store webhook whose body is not the product JSON its topic
    promises (``pipeline.store_payloads``)."""

    code = "invalid_webhook_payload"
    http_status = 400
