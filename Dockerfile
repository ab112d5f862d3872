# skuforge: one image for the API, CPU workers, beat and migrations.
# Build: docker build -t skuforge .   (the GPU worker has its own: docker/Dockerfile.gpu)
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
# exactly what CI passed on: the hashed lock (it covers the dev extra too), then the package
RUN pip install --require-hashes --no-deps -r requirements/pip.txt \
    && pip install --require-hashes --no-deps -r requirements/lock.txt
COPY service service
COPY tasks tasks
COPY pipeline pipeline
COPY storage storage
COPY brand_rules brand_rules
COPY sku_templates sku_templates
RUN pip install --no-deps --no-build-isolation .

ENV SKUFORGE_STORE__ROOT=/data/store \
    SKUFORGE_REMBG__HOME=/models/rembg
RUN mkdir -p /data/store /models && chown -R skuforge /data /models
USER skuforge
VOLUME ["/data/store"]
EXPOSE 8000
CMD ["skuforge", "serve", "--host", "0.0.0.0", "--port", "8000"]
