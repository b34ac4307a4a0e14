# syntax=docker/dockerfile:1
# The GPU worker image: CUDA torch (PyPI's Linux wheels bring the CUDA runtime; the host's NVIDIA
# driver comes in through the NVIDIA Container Toolkit) and `celery -A nlaweb worker -Q gpu`, one
# process, one GPU per container (scripts/stack worker). Models load lazily on the first job into
# the model cache volume (HF_HOME=/models); NLA_SOURCES_FILE names the mounted sources file.
# Build from the repository root: docker build -f docker/worker.Dockerfile -t nlaweb-worker .
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    NLAWEB_DATA_DIR=/data \
    HF_HOME=/models \
    NLA_DEVICE=cuda \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

RUN groupadd --system --gid 10001 nlaweb \
    && useradd --system --uid 10001 --gid nlaweb --home-dir /app --shell /usr/sbin/nologin nlaweb \
    && mkdir -p /data /models \
    && chown nlaweb:nlaweb /data /models

WORKDIR /app
COPY pyproject.toml manage.py ./
COPY nlaweb nlaweb
COPY workers workers
COPY templates templates
COPY scripts/stack scripts/stack
RUN python -m venv /opt/venv \
    && pip install .

USER 10001:10001
ENTRYPOINT ["scripts/stack"]
CMD ["worker"]
