# callsync daemon image. Build: docker build -t callsync .   Run: see docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LOG_FORMAT=json
# /healthz and /metrics, reachable from outside the container (published port, Prometheus).
ENV HEALTH_PORT=8080 \
    HEALTH_HOST=0.0.0.0

WORKDIR /app
# Dependencies first: the layer is reused while only the code changes.
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .
RUN useradd --system --no-create-home --shell /usr/sbin/nologin callsync
USER callsync

EXPOSE 8080
# Bolna webhooks, when WEBHOOK_PORT=8090 is set (off by default).
EXPOSE 8090
# slim has no curl: ask /healthz with Python. urlopen raises on 503, so the exit code is non-zero.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ['HEALTH_PORT'] + '/healthz', timeout=4)"]

# Exec form: Python is PID 1 and receives SIGTERM itself (docker stop), then exits 0.
CMD ["python", "main.py", "run"]
