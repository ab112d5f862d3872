"""File formats of the 3D and video deliverables, as pure bytes-in/bytes-out writers:
``gltf`` (GLB), ``usdz`` (USDZ and deterministic stored zips), ``usdz_checks`` (what a USDZ
must satisfy, including usd-core's own validators) and ``video`` (H.264 MP4, VP9 WebM)."""
