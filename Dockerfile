# syntax=docker/dockerfile:1
# Wattprint container image.
#
#   docker build -t wattprint:local .
#   docker run --rm -p 10066:10066 --pid=host -v /proc:/host/proc:ro -v /sys:/host/sys:ro \
#     wattprint:local serve --path.procfs=/host/proc --path.sysfs=/host/sys
#
# Runs as the unprivileged user wattprint (UID/GID 10066) by default. Reading RAPL energy
# counters needs root: /sys/class/powercap/*/energy_uj is mode 0400 since CVE-2020-8694
# (Linux 5.10). To measure CPU energy instead of estimating it, run as root with no
# capabilities:
#   docker run --user 0:0 --cap-drop ALL --security-opt no-new-privileges --read-only ...
# (the Helm chart's securityContext.runAsUser: 0 does the same). GPU energy needs the NVIDIA
# runtime: docker run --gpus all (or --runtime nvidia -e NVIDIA_VISIBLE_DEVICES=all).
#
# The base image is pinned by tag, not digest: a digest cannot be resolved or verified from
# where this file is written and tested (no registry access), and a digest copied from
# elsewhere would be unverifiable and go stale silently. CI that can reach the registry should
# pin it (docker buildx imagetools inspect python:3.11-slim-bookworm) and let Renovate or
# Dependabot bump it, writing both FROM lines as python:3.11-slim-bookworm@sha256:<digest>.

# --- builder: a wheel of Wattprint, plus wheels of everything it needs ------------------------
FROM python:3.11-slim-bookworm AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md NOTICE ./
COPY exporter ./exporter
# grpcio/protobuf: pinned for the kubelet pod-resources client (GPU -> pod); their
# versions must be at least those that generated exporter/identity/podresources_pb
# (tests/test_dockerfile.py checks it).
ARG GRPCIO_VERSION=1.85.3
ARG PROTOBUF_VERSION=7.36.2
RUN pip wheel --no-cache-dir --wheel-dir /wheels . \
        "grpcio==${GRPCIO_VERSION}" "protobuf==${PROTOBUF_VERSION}"

# --- runtime: the wheels installed offline; no compilers, no build tools ------------------------
FROM python:3.11-slim-bookworm
ARG VERSION=0.1.0
ARG REVISION=""
ARG CREATED=""
LABEL org.opencontainers.image.title="Wattprint" \
      org.opencontainers.image.description="Prometheus exporter: energy and carbon of AI inference, per model endpoint (GPU via NVML, CPU via RAPL or an estimate)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim-bookworm"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/*.whl \
    && groupadd --system --gid 10066 wattprint \
    && useradd --system --uid 10066 --gid 10066 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin wattprint \
    && wattprint --version
USER 10066:10066
EXPOSE 10066
# Docker only (Kubernetes uses the chart's probes). slim has no curl: Python's urllib it is.
# Another port or TLS: set HEALTHCHECK_URL.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ.get('HEALTHCHECK_URL', 'http://127.0.0.1:10066/healthz'), timeout=4)"]
ENTRYPOINT ["wattprint"]
CMD ["serve"]
