#!/usr/bin/env bash
# Build the Wattprint container image from this checkout.
#
#   scripts/build_image.sh                 # official base (python:3.11-slim-bookworm): the daemon
#                                          # pulls it from Docker Hub, the build pulls wheels from PyPI
#   scripts/build_image.sh --wheels        # the wheels built here (pip wheel, PyPI from this host),
#                                          # the build itself needs no network
#   scripts/build_image.sh --local-base --wheels   # no registry at all: a Debian bookworm base made
#                                          # by debootstrap from this host's Debian mirror (root)
# Options: --tag NAME (default wattprint:local), --base IMAGE (BASE_IMAGE build argument),
# --ca-bundle FILE (the CA bundle pip in the build trusts, for a TLS-intercepting proxy; passed
# as a build secret, in no layer), and after "--" anything for docker build. Labels and the
# WATTPRINT_REVISION/_BRANCH/_BUILD_DATE/_BUILD_USER environment come from git, the clock (RFC
# 3339, as org.opencontainers.image.created wants it), user@host and the package version. Environment: DOCKER (the client; default
# one that can use BuildKit), PYTHON (a Python 3.11 with pip, for --wheels; default python3),
# WATTPRINT_CACHE (where the debootstrap base is kept; default ~/.cache/wattprint-test),
# DEBIAN_MIRROR (default: the bookworm mirror of /etc/apt/sources.list*).
# The last line printed is the image ID.
set -euo pipefail
cd "$(dirname "$0")/.."

tag=wattprint:local base="" wheels=0 local_base=0 ca=""
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) tag=$2; shift 2 ;;
    --base) base=$2; shift 2 ;;
    --wheels) wheels=1; shift ;;
    --local-base) local_base=1; shift ;;
    --ca-bundle) ca=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "build_image.sh: unknown option $1 (see the comment at the top)" >&2; exit 2 ;;
  esac
done

# A client that builds with BuildKit (the Dockerfile uses RUN --mount): one with the buildx
# plugin, or one older than 23 (BuildKit built in, DOCKER_BUILDKIT=1; Debian's docker.io 20.10
# installs one as /usr/bin/docker). Newer clients without buildx fall back to the legacy builder.
pick_docker() {
  local c major
  for c in ${DOCKER:-} docker /usr/bin/docker; do
    command -v "$c" >/dev/null || continue
    if "$c" buildx version >/dev/null 2>&1; then echo "$c"; return; fi
    major=$("$c" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1)
    if [ -n "$major" ] && [ "$major" -lt 23 ]; then echo "$c"; return; fi
    [ -n "${DOCKER:-}" ] && break
  done
  echo "build_image.sh: no docker client that can use BuildKit (install the buildx plugin, or Debian's docker.io)" >&2
  exit 1
}
docker=$(pick_docker)
export DOCKER_BUILDKIT=1

if [ "$local_base" = 1 ]; then
  cache=${WATTPRINT_CACHE:-$HOME/.cache/wattprint-test}
  tarball=$cache/debian-bookworm-python3-minbase.tar
  if [ ! -s "$tarball" ]; then
    command -v debootstrap >/dev/null || { echo "build_image.sh: --local-base needs debootstrap (apt-get install debootstrap)" >&2; exit 1; }
    mirror=${DEBIAN_MIRROR:-$(python3 - <<'EOF'
import glob, re
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):    # deb822
    for stanza in re.split(r"\n\s*\n", open(path).read()):
        f = dict((m[1].lower(), m[2].split()) for m in re.finditer(r"^([\w-]+):\s*(.*)$", stanza, re.M))
        if "bookworm" in f.get("suites", []) and "deb" in f.get("types", []):
            print(f["uris"][0]); raise SystemExit
for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
    try:
        lines = open(path).read().splitlines()
    except OSError:
        continue
    for line in lines:
        m = re.match(r"deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", line + " ")
        if m:
            print(m[1]); raise SystemExit
print("http://deb.debian.org/debian")
EOF
)}
    mkdir -p "$cache"
    root=$(mktemp -d "$cache/rootfs.XXXXXX")
    trap 'rm -rf "$root"' EXIT
    echo "== debootstrap bookworm (minbase + python3, python3-venv, ca-certificates) from $mirror" >&2
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
      bookworm "$root" "$mirror" >&2
    # what an image does not need: apt's downloaded lists and packages, documentation
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/log/* \
      "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/*
    tar -C "$root" --numeric-owner -cf "$tarball.part" . && mv "$tarball.part" "$tarball"
    rm -rf "$root"
    trap - EXIT
  fi
  base=${base:-wattprint-base:bookworm}
  # imported again only when the tarball changed (its size and time, kept in a label)
  stamp=$(stat -c %s-%Y "$tarball")
  if [ "$("$docker" image inspect --format '{{index .Config.Labels "io.wattprint.base.tarball"}}' "$base" 2>/dev/null)" != "$stamp" ]; then
    echo "== importing $tarball as $base" >&2
    "$docker" import --change "LABEL io.wattprint.base.tarball=$stamp" --change 'CMD ["python3"]' \
      "$tarball" "$base" >&2
  fi
fi

build_args=()
[ -n "$base" ] && build_args+=(--build-arg "BASE_IMAGE=$base")
[ -n "$ca" ] && build_args+=(--secret "id=ca,src=$ca")
if [ "$wheels" = 1 ]; then
  python=${PYTHON:-python3}
  "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || {
    echo "build_image.sh: --wheels needs a Python 3.11 (the image's); set PYTHON" >&2; exit 1; }
  pins() { sed -n "s/^ARG $1=//p" Dockerfile; }
  # built from a copy of what the Dockerfile copies: an in-tree build would leave build/ and
  # *.egg-info here, and a stale build/lib would slip deleted modules into the wheel
  src=$(mktemp -d)
  trap 'rm -rf .wheels "$src"' EXIT
  tar -c --exclude=__pycache__ --exclude=exporter/_build.py pyproject.toml README.md NOTICE exporter | tar -x -C "$src"
  rm -rf .wheels && mkdir .wheels
  echo "== pip wheel (Wattprint and its dependencies) into .wheels/" >&2
  "$python" -m pip wheel --quiet --disable-pip-version-check --wheel-dir .wheels "$src" \
    "grpcio==$(pins GRPCIO_VERSION)" "protobuf==$(pins PROTOBUF_VERSION)" >&2
  echo "== $(ls .wheels | wc -l) wheels, $(du -sk .wheels | cut -f1) KiB" >&2
  # offline by construction, and proved so: the RUN steps get no network at all
  build_args+=(--build-arg WHEELS=context --network none)
fi

version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' exporter/__init__.py)
revision=$(git rev-parse HEAD 2>/dev/null || true)
branch=$(git rev-parse --abbrev-ref HEAD 2>/dev/null || true)
echo "== $docker build -t $tag (${base:-default base})" >&2
"$docker" build --quiet --tag "$tag" "${build_args[@]}" \
  --build-arg "VERSION=$version" --build-arg "REVISION=$revision" --build-arg "BRANCH=$branch" \
  --build-arg "BUILD_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)" --build-arg "BUILD_USER=$(id -un)@$(hostname)" \
  "$@" .
