#!/usr/bin/env bash
# Shared by run.sh and test.sh: a virtual environment in .venv with Wattprint installed.
# Usage: scripts/setup.sh [extra]   (extra = "test" adds the test dependencies)
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
apt_need=()
python3 -c "import ensurepip, venv" 2>/dev/null || apt_need+=(python3-venv)
if [ "${1:-}" = "test" ]; then
  # real Prometheus, promtool and node exporter for the integration tests and benchmarks
  command -v prometheus >/dev/null || apt_need+=(prometheus)
  command -v prometheus-node-exporter >/dev/null || apt_need+=(prometheus-node-exporter)
  command -v prometheus-alertmanager >/dev/null || apt_need+=(prometheus-alertmanager)
  command -v openssl >/dev/null || apt_need+=(openssl)
  # a real headless browser for the landing page's test (tests/integration/test_demo.py)
  command -v chromium >/dev/null || apt_need+=(chromium)
  # the image built and run (tests/integration/test_image.py): Debian's Docker engine (dockerd,
  # and a client with BuildKit built in) and debootstrap for a base made from Debian's packages
  # (both in /usr/sbin, which a user's PATH may lack)
  PATH="$PATH:/usr/sbin" command -v dockerd >/dev/null || apt_need+=(docker.io)
  PATH="$PATH:/usr/sbin" command -v debootstrap >/dev/null || apt_need+=(debootstrap)
fi
if [ ${#apt_need[@]} -gt 0 ]; then
  echo "== installing Debian packages: ${apt_need[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${apt_need[@]}"
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
spec=".[demo]"  # demo: rich, for `wattprint demo`'s terminal view
[ "${1:-}" = "test" ] && spec=".[test,demo]"
echo "== installing wattprint${1:+[$1]} into .venv"
.venv/bin/python -m pip install -q --disable-pip-version-check -e "$spec"
if [ "${1:-}" = "test" ]; then
  # chart rendering and validation, Dockerfile lint (tests/test_helm.py, tests/test_dockerfile.py)
  .venv/bin/python -m pip install -q --disable-pip-version-check -r tests/requirements-deploy.txt
  if [ ! -x .venv-checkov/bin/checkov ]; then  # checkov pins old libraries: its own venv
    echo "== installing checkov into .venv-checkov"
    python3 -m venv .venv-checkov
    .venv-checkov/bin/python -m pip install -q --disable-pip-version-check 'checkov>=3.3'
  fi
fi
