"""The review UI's Content-Security-Policy: this origin only, no inline script, no framing.

``CSP`` is every ``/review`` page's policy. A job page that shows a GLB in
``<model-viewer>`` gets ``VIEWER_CSP``, which adds only what the viewer was seen to need
in Chromium (each refusal was a console error; ``tests/test_review_ui.py`` fails on any):

- ``'wasm-unsafe-eval'``: three.js's meshopt decoder compiles its WebAssembly when the
  module loads. It permits WebAssembly compilation only, not ``eval`` of script.
- the hash of the one ``<style>`` element in model-viewer's shadow root (its ``:host``
  layout), as shipped in the version ``vendor/package-lock.json`` pins; a new version with
  other CSS shows up as a refused style in the browser test.
- ``connect-src blob:``: the GLB's embedded textures are handed to three.js as ``blob:``
  URLs, which it fetches.
"""

from __future__ import annotations

MODEL_VIEWER_STYLE = "'sha256-PXtZZkJMMyc18o/DN1ZEFOJ2qEGq95IQbVaJFMOXOb0='"  # 4.4.0


def _policy(script: str, style: str, connect: str) -> str:
    return "; ".join(
        (
            "default-src 'none'",
            f"script-src {script}",
            f"style-src {style}",
            "img-src 'self'",
            "media-src 'self'",
            f"connect-src {connect}",
            "form-action 'self'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        )
    )


CSP = _policy("'self'", "'self'", "'self'")
VIEWER_CSP = _policy("'self' 'wasm-unsafe-eval'", f"'self' {MODEL_VIEWER_STYLE}", "'self' blob:")
