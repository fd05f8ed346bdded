# syntax=docker/dockerfile:1
# Loom daemon image: one image for every role; the role is the command argument.
#
#   docker build -t loom .
#   docker run --rm -p 8080:8080 -e LOOM_API_TOKEN=change-me loom run
#   docker run ... loom gateway | scheduler | attention | worker [module:attribute]
#
# The image listens on 0.0.0.0:8080, and Loom refuses to listen beyond loopback without
# LOOM_API_TOKEN: give every container a token (the Helm chart always does).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: resolve and install exactly what uv.lock says into /app/.venv ------------------
FROM ${PYTHON_IMAGE} AS build

ARG UV_VERSION=0.13.9
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv

# uv from PyPI (not a registry image), so the build needs nothing but PyPI.
RUN pip install "uv==${UV_VERSION}"

WORKDIR /src
# Dependencies first: this layer is rebuilt only when the lock file changes.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --extra otel --no-install-project --no-editable

# Then Loom itself, installed (not editable) into the same environment.
COPY README.md ./
COPY loom ./loom
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --extra otel --no-editable

# --- runtime: the interpreter, the environment, an unprivileged user ----------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="loom" \
      org.opencontainers.image.description="Loom: a daemon that turns events into agent work" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed numeric uid, so Kubernetes can check runAsNonRoot without reading /etc/passwd.
RUN groupadd --system --gid 10001 loom \
    && useradd --system --uid 10001 --gid loom --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin loom

COPY --from=build --chown=root:root /app/.venv /app/.venv

ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LOOM_HTTP__HOST=0.0.0.0 \
    LOOM_HTTP__PORT=8080

# Fail the build, not the first cron job, if the CLI or the time zone database is missing
# (cron timezones use zoneinfo, which reads the base image's tzdata).
RUN loom --version && python -c "import zoneinfo; zoneinfo.ZoneInfo('Europe/Berlin')"

# `loom run module:attribute` imports from the working directory: mount your app here.
WORKDIR /app
USER 10001:10001
EXPOSE 8080

# Loom drains on SIGTERM (stop consuming, finish or hand back runs within
# LOOM_SHUTDOWN_TIMEOUT) and exits 0; give `docker stop -t` at least that long.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('LOOM_HTTP__PORT', '8080') + '/healthz', timeout=4)"]

ENTRYPOINT ["loom"]
CMD ["run"]
