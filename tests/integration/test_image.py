"""The container image, built and run for real: the repository's Dockerfile built by
scripts/build_image.sh --local-base --wheels (a Debian bookworm base made by debootstrap from
Debian's packages, the wheels built on this host, the build itself without network), then run as
the README documents it: --network host, read-only root, /proc and /sys mounted read-only. The
default WHEELS=source route (pip in the builder stage, from PyPI) is built on the same base too.

A Docker daemon is needed: the one at DOCKER_HOST (or the default socket) if it answers,
otherwise a private dockerd (Debian's docker.io, root) started here on its own socket and data
root and stopped afterwards. The tests skip, saying why, only where no dockerd can start.
The debootstrap base is cached in ~/.cache/wattprint-test (WATTPRINT_CACHE): the first run makes
it (about a minute), later runs import it. Figures (size, user, times) are printed: pytest -s
shows them."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from support import ROOT, free_port, parse_metrics, stop_all, value

pytestmark = pytest.mark.integration

UID = 10066  # the Dockerfile's USER
HEAD = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
# The layer Wattprint adds on top of its base (venv + wheels installed): measured 53 MB (grpc
# 19 MB, pydantic + pydantic-core 11 MB, aiohttp 9 MB, ...). 100 MB catches a gross regression:
# a compiler toolchain, a second Python, or a pip cache in the image.
MAX_APP_LAYER_MB = 100


class Docker:
    def __init__(self, client: str, env: dict[str, str], started: subprocess.Popen | None):
        self.client, self.env, self.started = client, env, started

    def __call__(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        out = subprocess.run([self.client, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if check:
            assert out.returncode == 0, f"docker {' '.join(args)}: {out.stderr[-3000:]}"
        return out


def _answers(client: str, env: dict[str, str]) -> bool:
    try:
        return subprocess.run([client, "info", "--format", "{{.ServerVersion}}"], env=env,
                              capture_output=True, timeout=20).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def build(docker, tag: str, *args: str) -> tuple[str, float]:
    """scripts/build_image.sh --local-base ... → (image ID, seconds)."""
    t0 = time.monotonic()
    out = subprocess.run([str(ROOT / "scripts" / "build_image.sh"), "--local-base", "--tag", tag, *args],
                         env={**docker.env, "PYTHON": sys.executable}, cwd=ROOT, capture_output=True,
                         text=True, timeout=1200)
    assert out.returncode == 0, out.stderr[-5000:]
    image_id = out.stdout.strip().splitlines()[-1]
    assert image_id.startswith("sha256:"), out.stdout
    return image_id, time.monotonic() - t0


def _unmount_under(path: Path) -> None:
    """What dockerd leaves mounted under its exec root once stopped (the netns/default bind)."""
    points = [line.split()[4] for line in open("/proc/self/mountinfo")]
    for point in sorted((p for p in points if p.startswith(f"{path}/")), reverse=True):
        subprocess.run(["umount", point], capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def docker():
    client = shutil.which("docker") or "/usr/bin/docker"
    if not os.path.exists(client):
        pytest.skip("no docker client (scripts/setup.sh test installs Debian's docker.io)")
    env = dict(os.environ)
    if _answers(client, env):  # a daemon the user already runs: use it, leave it running
        yield Docker(client, env, None)
        return
    dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
    if not os.path.exists(dockerd):
        pytest.skip("dockerd cannot start: not installed (scripts/setup.sh test installs Debian's docker.io)")
    if os.geteuid() != 0:
        pytest.skip("dockerd cannot start: it needs root, and none answers at DOCKER_HOST or the default socket")
    home = Path(tempfile.mkdtemp(prefix="wp-dockerd-"))  # short: unix socket paths max 107 bytes
    env["DOCKER_HOST"] = f"unix://{home}/docker.sock"
    log = open(home / "dockerd.log", "w")
    # no iptables rules and no docker0 bridge on the host: the containers use --network host
    # and the build --network none
    proc = subprocess.Popen([dockerd, "--data-root", str(home / "root"), "--exec-root", str(home / "exec"),
                             "--pidfile", str(home / "dockerd.pid"), "-H", env["DOCKER_HOST"],
                             "--iptables=false", "--bridge=none"], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not _answers(client, env):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            tail = (home / "dockerd.log").read_text()[-1500:]
            _unmount_under(home)
            shutil.rmtree(home, ignore_errors=True)
            pytest.skip(f"dockerd cannot start here: {tail}")
        time.sleep(0.5)
    try:
        yield Docker(client, env, proc)
    finally:
        stop_all([proc], timeout=30)  # dockerd stops its containers and containerd first
        log.close()
        _unmount_under(home)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def image(docker):
    tag = f"wattprint-test:{os.getpid()}"
    image_id, build_s = build(docker, tag, "--wheels")
    print(f"\nimage: built {tag} ({image_id[:19]}) from wattprint-base:bookworm, wheels from the host, "
          f"offline, in {build_s:.1f} s")
    yield tag
    docker("rmi", tag, check=False)


def inspect(docker, ref: str) -> dict:
    return json.loads(docker("image", "inspect", ref).stdout)[0]


def get(url: str, timeout: float = 5) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read().decode()


# the documented mounts (README "Deploy", deploy/compose/compose.yaml): the host's /proc and
# /sys, read-only; read-only root with a /tmp; no capabilities
RUN_ARGS = ["--network", "host", "--pid", "host", "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges", "-v", "/proc:/host/proc:ro", "-v", "/sys:/host/sys:ro"]
PATHS = ["--path.procfs=/host/proc", "--path.sysfs=/host/sys"]


def test_serve_in_the_image(docker, image):
    port = free_port()
    t0 = time.monotonic()
    cid = docker("run", "-d", *RUN_ARGS, "-e", f"HEALTHCHECK_URL=http://127.0.0.1:{port}/healthz",
                 "--health-interval", "1s", "--health-start-period", "30s", image,
                 "serve", *PATHS, f"--web.listen-address=127.0.0.1:{port}", "--sample.interval=500ms").stdout.strip()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status, body = get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except OSError:
                state = json.loads(docker("inspect", cid).stdout)[0]["State"]
                assert state["Running"] and time.monotonic() < deadline, docker("logs", cid).stderr
                time.sleep(0.3)
        ready_s = time.monotonic() - t0
        assert (status, body.strip()) == (200, "ok")
        first = parse_metrics(get(f"http://127.0.0.1:{port}/metrics")[1])
        assert value(first, "wattprint_build_info", version=__import__("exporter").__version__) == 1
        [labels] = first["wattprint_build_info"]
        assert dict(labels)["python"].startswith("3.11."), labels
        if HEAD:  # the build arguments reach the metrics (exporter/buildinfo.py)
            assert dict(labels)["revision"] == HEAD, labels
        zones = [dict(k) for k in first["wattprint_cpu_zone_info"]]
        assert any(z["used_in_total"] == "true" for z in zones), zones
        # energy accrues from the host's /proc/stat, read through the mount
        e0 = value(first, "wattprint_node_energy_joules_total", component="cpu")
        deadline = time.monotonic() + 20
        while (e1 := value(parse_metrics(get(f"http://127.0.0.1:{port}/metrics")[1]),
                           "wattprint_node_energy_joules_total", component="cpu")) <= e0:
            assert time.monotonic() < deadline, f"no CPU energy accrued: {e0} J"
            time.sleep(0.5)
        # the image's own HEALTHCHECK, run by dockerd
        deadline = time.monotonic() + 30
        while (health := json.loads(docker("inspect", cid).stdout)[0]["State"]["Health"])["Status"] != "healthy":
            assert health["Status"] == "starting" and time.monotonic() < deadline, health
            time.sleep(0.5)
    finally:
        docker("stop", "--time", "10", cid, check=False)
    exit_code = int(docker("wait", cid).stdout.strip())
    logs = docker("logs", cid)
    docker("rm", cid, check=False)
    assert exit_code == 0, f"serve did not stop cleanly on SIGTERM: {exit_code}\n{logs.stderr[-3000:]}"
    assert f"listening on 127.0.0.1:{port}" in logs.stderr and "level=error" not in logs.stderr, logs.stderr
    print(f"image: serve answered /healthz {ready_s:.1f} s after docker run; CPU energy {e0:.3f} -> {e1:.3f} J; "
          f"HEALTHCHECK {health['Status']}; stopped with exit code {exit_code}")


def test_check_in_the_image(docker, image):
    text = docker("run", "--rm", *RUN_ARGS, image, "check", *PATHS)
    assert text.returncode == 0 and "Wattprint" in text.stdout and "procfs:" in text.stdout, text.stdout
    rep = json.loads(docker("run", "--rm", *RUN_ARGS, image, "check", "--output", "json", *PATHS).stdout)
    host_pids = sum(1 for p in os.listdir("/proc") if p.isdigit())
    # the host's processes, not the container's one: /proc is the host's, mounted
    assert rep["procfs"]["readable"] and rep["procfs"]["processes"] >= max(5, host_pids // 2), (rep["procfs"], host_pids)
    if json.loads(docker("info", "--format", "{{json .DefaultRuntime}}").stdout) == "runc":
        # no NVIDIA runtime asked for: the image has no NVML, and says so
        assert rep["gpu"]["state"] == "no_library" and "libnvidia-ml.so.1" in rep["gpu"]["detail"]
    if not rep["rapl"]["usable"]:  # a VM, or energy_uj root-only for the image's user
        assert rep["cpu_meter"] == "estimate" and rep["cpu_estimate"]["vcpus"] == os.cpu_count()
        assert "CPU estimate (in use)" in text.stdout
    print(f"image: check sees {rep['procfs']['processes']} host processes (host: {host_pids}), "
          f"GPU {rep['gpu']['state']}, CPU meter {rep['cpu_meter']}")


def test_size_user_and_labels(docker, image):
    meta = inspect(docker, image)
    base = inspect(docker, "wattprint-base:bookworm")
    size_mb, base_mb = meta["Size"] / 1e6, base["Size"] / 1e6
    app_mb = size_mb - base_mb
    uid_gid = docker("run", "--rm", "--read-only", "--entrypoint", "id", image).stdout.strip()
    print(f"image: size {size_mb:.1f} MB = base {base_mb:.1f} MB + Wattprint {app_mb:.1f} MB; "
          f"user {meta['Config']['User']} ({uid_gid})")
    assert 0 < app_mb < MAX_APP_LAYER_MB, f"Wattprint's layer is {app_mb:.1f} MB"
    assert meta["Config"]["User"] == f"{UID}:{UID}"
    assert uid_gid.startswith(f"uid={UID}(wattprint) gid={UID}(wattprint)"), uid_gid
    # no installer and no wheel left in the runtime (/wheels stays as the empty mount point)
    probe = docker("run", "--rm", "--read-only", "--entrypoint", "python", image, "-c",
                   "import glob, importlib.util as u; print(u.find_spec('pip') is None, "
                   "glob.glob('/wheels/*') + glob.glob('/opt/wattprint/**/*.whl', recursive=True))")
    assert probe.stdout.strip() == "True []", probe.stdout
    labels, env = meta["Config"]["Labels"], dict(e.split("=", 1) for e in meta["Config"]["Env"])
    if HEAD:
        assert labels["org.opencontainers.image.revision"] == env["WATTPRINT_REVISION"] == HEAD
    assert labels["org.opencontainers.image.created"] == env["WATTPRINT_BUILD_DATE"] != ""
    assert labels["io.wattprint.branch"] == env["WATTPRINT_BRANCH"]
    assert labels["org.opencontainers.image.base.name"] == "wattprint-base:bookworm"
    assert labels["org.opencontainers.image.version"] == __import__("exporter").__version__
    assert env["WATTPRINT_BUILD_USER"]
    # wattprint --version shows them (a stale exporter/_build.py in the checkout is kept out)
    version = docker("run", "--rm", "--read-only", image, "--version").stdout
    assert version.startswith(f"wattprint, version {__import__('exporter').__version__} "), version
    if HEAD:
        assert f"branch: {env['WATTPRINT_BRANCH']}, revision: {HEAD})" in version, version
    assert f"build date:       {env['WATTPRINT_BUILD_DATE']}" in version, version
    print("image: --version: " + " | ".join(line.strip() for line in version.splitlines()))


DISTRIBUTIONS = ("import importlib.metadata as m, json; "
                 "print(json.dumps(sorted(d.metadata['Name'].lower() + ' ' + d.version for d in m.distributions())))")


def test_source_mode_builds_too(docker, image):
    """WHEELS=source, the default: the builder stage runs pip wheel against PyPI. The daemon here
    has no bridge (the build runs on the host network) and pip trusts the host's CA bundle, as a
    build behind a TLS-intercepting proxy does."""
    import ssl

    ca = ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt"
    tag = f"wattprint-test:{os.getpid()}-source"
    image_id, build_s = build(docker, tag, "--ca-bundle", ca, "--", "--network", "host")
    try:
        version = docker("run", "--rm", "--read-only", tag, "--version").stdout
        assert version.startswith(f"wattprint, version {__import__('exporter').__version__} "), version
        if HEAD:
            assert f"revision: {HEAD})" in version, version
        rows = {img: json.loads(docker("run", "--rm", "--read-only", "--entrypoint", "python", img, "-c",
                                       DISTRIBUTIONS).stdout) for img in (image, tag)}
        pins = dict(re.findall(r"^ARG (GRPCIO|PROTOBUF)_VERSION=(\S+)$", (ROOT / "Dockerfile").read_text(), re.M))
        # the same packages either way (versions may differ: the host's pip may have constraints),
        # and the Dockerfile's grpcio/protobuf pins in both
        assert {r.split()[0] for r in rows[image]} == {r.split()[0] for r in rows[tag]}, rows
        for row in rows.values():
            assert f"grpcio {pins['GRPCIO']}" in row and f"protobuf {pins['PROTOBUF']}" in row, row
            assert "pip" not in {r.split()[0] for r in row}
        assert not any(r.startswith("setuptools ") for r in rows[tag]), "the builder's tools stay in the builder"
        size_mb = inspect(docker, tag)["Size"] / 1e6
    finally:
        docker("rmi", tag, check=False)
    print(f"image: WHEELS=source built in {build_s:.1f} s, {size_mb:.1f} MB, {len(rows[tag])} distributions")
