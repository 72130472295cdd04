# The provisioning worker (Faust app + web server on WEB_PORT): `python -m pipeline worker`.
# Build: docker build -t provisioning-worker .   (compose.yaml builds and wires it to the other services)

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Compilers only for dependencies without a wheel for this platform; they stay in this stage.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY agents ./agents
COPY tables ./tables
COPY web ./web
RUN pip install .

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DATA_DIR=/data \
    WEB_HOST=0.0.0.0 \
    WEB_PORT=6066
COPY --from=build /opt/venv /opt/venv
# The local stand-ins of OpenProject and of the derivatives engine, which compose.yaml runs from this image as
# services of their own (working_dir /opt/standins: `python -m devstack.<stand-in>`). Copied beside the
# wheel, never into it: the wheel ships only pipeline, agents, tables and web; the worker does not import them.
COPY devstack/__init__.py devstack/openproject_standin.py devstack/derivatives_standin.py /opt/standins/devstack/
RUN useradd --system --uid 10001 --home-dir /data --create-home worker
USER worker
WORKDIR /data
EXPOSE 6066
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=6 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('WEB_PORT', '6066')}/health\", timeout=3)"]
CMD ["python", "-m", "pipeline", "worker"]
