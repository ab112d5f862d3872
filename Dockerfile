# skuforge: one image for the API, CPU workers, beat and migrations.
# Build: docker build -t skuforge .   (the GPU worker has its own: docker/Dockerfile.gpu)
# The review UI's third-party front-end files, exactly as service/ui/vendor/package-lock.json
# pins them (versions and integrity hashes); without the dev dependencies (axe-core is for the
# browser tests). Only the files the app serves are copied into the image below.
FROM node:20-bookworm-slim AS ui-vendor
WORKDIR /ui
COPY service/ui/vendor/package.json service/ui/vendor/package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund --loglevel=error

FROM python:3.11-slim-bookworm AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# EGL + Mesa llvmpipe for headless rendering, ffmpeg for ffprobe checks, curl for healthchecks
RUN apt-get update \
    && apt-get install -y --no-install-recommends libegl1 libgl1-mesa-dri ffmpeg curl \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 10001 skuforge
WORKDIR /app

COPY pyproject.toml README.md LICENSE ./
COPY requirements requirements
# exactly what CI passed on: the hashed lock without the dev and gpu extras (the API process
# never imports torch or diffusers, so this image does not ship them), then the package
RUN pip install --require-hashes --no-deps -r requirements/pip.txt \
    && pip install --require-hashes --no-deps -r requirements/lock-api.txt
COPY service service
COPY tasks tasks
COPY pipeline pipeline
COPY storage storage
COPY brand_rules brand_rules
COPY sku_templates sku_templates
RUN pip install --no-deps --no-build-isolation .
# served from the installed package's vendor/node_modules (service/ui/__init__.py VENDOR_FILES);
# the build fails here if the installed package is not where the files went (-I: not /app)
ARG UI_NODE_MODULES=/usr/local/lib/python3.11/site-packages/service/ui/vendor/node_modules
COPY --from=ui-vendor /ui/node_modules/htmx.org/LICENSE /ui/node_modules/htmx.org/package.json ${UI_NODE_MODULES}/htmx.org/
COPY --from=ui-vendor /ui/node_modules/htmx.org/dist/htmx.min.js ${UI_NODE_MODULES}/htmx.org/dist/
COPY --from=ui-vendor /ui/node_modules/@google/model-viewer/LICENSE /ui/node_modules/@google/model-viewer/package.json ${UI_NODE_MODULES}/@google/model-viewer/
COPY --from=ui-vendor /ui/node_modules/@google/model-viewer/dist/model-viewer.min.js ${UI_NODE_MODULES}/@google/model-viewer/dist/
COPY --from=ui-vendor /ui/node_modules/three/LICENSE ${UI_NODE_MODULES}/three/
RUN ui="$(python -I -c 'import importlib.util as u; print(u.find_spec("service").submodule_search_locations[0])')/ui/vendor/node_modules" \
    && test "$ui" = "${UI_NODE_MODULES}" \
    && test -f "$ui/htmx.org/dist/htmx.min.js" \
    && test -f "$ui/@google/model-viewer/dist/model-viewer.min.js"

ENV SKUFORGE_STORE__ROOT=/data/store \
    SKUFORGE_REMBG__HOME=/models/rembg
RUN mkdir -p /data/store /models && chown -R skuforge /data /models
USER skuforge
VOLUME ["/data/store"]
EXPOSE 8000
CMD ["skuforge", "serve", "--host", "0.0.0.0", "--port", "8000"]
