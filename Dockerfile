# callsync daemon image. Build: docker build -t callsync .   Run: see docker-compose.yml.
#
# The base image is pinned by digest (a tag moves; a digest is the exact image). To move to a newer
# python:3.11-slim: `docker buildx imagetools inspect python:3.11-slim` and replace the digest in
# both stages.
ARG PYTHON_IMAGE=python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

# Stage 1: the runtime dependencies, from the hash-locked requirements.lock (no test packages),
# into a virtual environment that the runtime stage copies whole.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
COPY requirements.lock .
# --require-hashes: every package, direct or not, must match the hash in the lock.
RUN /opt/venv/bin/pip install --require-hashes --no-deps -r requirements.lock

# Stage 2: what runs: the interpreter, the venv and the code; no pip cache, no build tools.
FROM ${PYTHON_IMAGE}
ARG CALLSYNC_VERSION=dev
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LOG_FORMAT=json \
    CALLSYNC_VERSION=${CALLSYNC_VERSION}
# /livez, /readyz, /healthz and /metrics, reachable from outside the container (published port, Prometheus).
ENV HEALTH_PORT=8080 \
    HEALTH_HOST=0.0.0.0

RUN useradd --system --no-create-home --shell /usr/sbin/nologin --uid 10001 callsync
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --chown=root:root . .
USER 10001

EXPOSE 8080
# Bolna webhooks, when WEBHOOK_PORT=8090 is set (off by default).
EXPOSE 8090
# slim has no curl: ask /healthz with Python. urlopen raises on 503, so the exit code is non-zero.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ['HEALTH_PORT'] + '/healthz', timeout=4)"]

# Exec form: Python is PID 1 and receives SIGTERM itself (docker stop), then exits 0.
CMD ["python", "main.py", "run"]
