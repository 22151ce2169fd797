# Wattprint container image.
#
#   scripts/build_image.sh                      # = docker build -t wattprint:local . (+ labels)
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
# Read-only root: the image writes nothing at run time (no bytecode, no state files).
#
# Build arguments (scripts/build_image.sh sets the last five from git and the package):
#   BASE_IMAGE  the Python 3.11 base of both stages (default the official python image). Any
#               Debian-like base with python3 and its venv module works, e.g. one made by
#               debootstrap from Debian's packages (scripts/build_image.sh --local-base).
#   WHEELS      where the wheels come from: "source" (default) builds them in the builder stage,
#               which downloads the dependencies from PyPI; "context" takes them from .wheels/
#               in the build context, built on the host (scripts/build_image.sh --wheels): the
#               build then needs no network at all.
#   VERSION, REVISION, BRANCH, BUILD_DATE, BUILD_USER  OCI labels (but the user), and
#               WATTPRINT_REVISION/_BRANCH/_BUILD_DATE/_BUILD_USER in the environment: wattprint
#               --version and wattprint_build_info show them (exporter/buildinfo.py). The build
#               context never carries a generated exporter/_build.py (.dockerignore): it would
#               win over them.
#
# No "# syntax=" line on purpose: it makes BuildKit pull docker/dockerfile from Docker Hub
# before building, which an offline build cannot; the daemon's built-in frontend (Docker
# >= 20.10) has everything used here (RUN --mount, ARG in FROM).
#
# The base image is pinned by tag, not digest: a digest cannot be resolved or verified from
# where this file is written and tested (no registry access), and a digest copied from
# elsewhere would be unverifiable and go stale silently. CI that can reach the registry should
# pin it (docker buildx imagetools inspect python:3.11-slim-bookworm) and let Renovate or
# Dependabot bump it, passing --build-arg BASE_IMAGE=python:3.11-slim-bookworm@sha256:<digest>.
ARG BASE_IMAGE=python:3.11-slim-bookworm
ARG WHEELS=source

# --- WHEELS=source: a wheel of Wattprint, plus wheels of everything it needs --------------------
FROM ${BASE_IMAGE} AS wheels-source
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md NOTICE ./
COPY exporter ./exporter
# grpcio/protobuf: pinned for the kubelet pod-resources client (GPU -> pod); their
# versions must be at least those that generated exporter/identity/podresources_pb
# (tests/test_dockerfile.py checks it; scripts/build_image.sh --wheels reads them from here).
ARG GRPCIO_VERSION=1.85.3
ARG PROTOBUF_VERSION=7.36.2
# pip from a throw-away venv: a Debian base has no pip of its own (and python3 is
# externally managed there, PEP 668). Behind a TLS-intercepting proxy, hand pip the CA bundle
# that trusts it: --secret id=ca,src=/etc/ssl/certs/ca-certificates.crt (never in a layer).
RUN --mount=type=secret,id=ca \
    if [ -f /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
    && python3 -m venv /build \
    && /build/bin/pip wheel --no-cache-dir --wheel-dir /wheels . \
        "grpcio==${GRPCIO_VERSION}" "protobuf==${PROTOBUF_VERSION}"

# --- WHEELS=context: the wheels built on the host, from the build context -----------------------
FROM scratch AS wheels-context
COPY .wheels/ /wheels/

# an alias of one of the two stages above, not an image (hadolint cannot tell)
# hadolint ignore=DL3006
FROM wheels-${WHEELS} AS wheels

# --- runtime: the wheels installed offline into a venv; no compilers, no build tools, no pip -----
FROM ${BASE_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/wattprint/bin:$PATH
# venv + ensurepip exist on both the official image and Debian's python3-venv; pip itself
# is removed once the wheels are in (nothing installs at run time).
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    python3 -m venv /opt/wattprint \
    && /opt/wattprint/bin/pip install --no-cache-dir --no-index --find-links=/wheels /wheels/*.whl \
    && /opt/wattprint/bin/pip uninstall --yes --quiet pip setuptools \
    && groupadd --system --gid 10066 wattprint \
    && useradd --system --uid 10066 --gid 10066 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin wattprint \
    && wattprint --version
ARG BASE_IMAGE
ARG VERSION=0.1.0
ARG REVISION=""
ARG BRANCH=""
ARG BUILD_DATE=""
ARG BUILD_USER=""
LABEL org.opencontainers.image.title="Wattprint" \
      org.opencontainers.image.description="Prometheus exporter: energy and carbon of AI inference, per model endpoint (GPU via NVML, CPU via RAPL or an estimate)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${BUILD_DATE}" \
      org.opencontainers.image.base.name="${BASE_IMAGE}" \
      io.wattprint.branch="${BRANCH}"
ENV WATTPRINT_REVISION="${REVISION}" \
    WATTPRINT_BRANCH="${BRANCH}" \
    WATTPRINT_BUILD_DATE="${BUILD_DATE}" \
    WATTPRINT_BUILD_USER="${BUILD_USER}"
USER 10066:10066
EXPOSE 10066
# Docker only (Kubernetes uses the chart's probes). slim has no curl: Python's urllib it is.
# Another port or TLS: set HEALTHCHECK_URL.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ.get('HEALTHCHECK_URL', 'http://127.0.0.1:10066/healthz'), timeout=4)"]
ENTRYPOINT ["wattprint"]
CMD ["serve"]
