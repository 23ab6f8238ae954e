# syntax=docker/dockerfile:1
# Build a wheel in a throwaway stage, install it into a slim runtime that runs as a non-root user.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# The wheel carries the migration scripts inside the package (pyproject.toml force-include).
COPY migrations ./migrations
RUN pip wheel --wheel-dir /wheels .

FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SLUICEGATE_HOST=0.0.0.0 \
    SLUICEGATE_PORT=8080 \
    SLUICEGATE_DATABASE_PATH=/data/sluicegate.db
RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin sluicegate \
    && mkdir -p /data && chown sluicegate /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels sluicegate && rm -rf /wheels
USER sluicegate
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD python -c "import os, sys, urllib.request; port = os.environ.get('SLUICEGATE_PORT', '8080'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=2).status == 200 else 1)"
ENTRYPOINT ["sluicegate"]
CMD ["serve"]
