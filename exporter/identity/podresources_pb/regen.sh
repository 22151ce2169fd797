#!/bin/sh
# Regenerate the Python stubs for the vendored kubelet pod-resources v1 API.
# Run from anywhere; needs grpcio-tools in the active (or given) Python:
#   PYTHON=.venv/bin/python exporter/identity/podresources_pb/regen.sh
# Paths are given relative to the repository root so that the generated
# api_pb2_grpc.py imports "exporter.identity.podresources_pb.api_pb2".
# The wire names stay "/v1.PodResourcesLister/…" (the proto package is v1).
set -eu
PYTHON="${PYTHON:-python3}"
root="$(cd "$(dirname "$0")/../../.." && pwd)"
cd "$root"
"$PYTHON" -m grpc_tools.protoc -I . \
  --python_out=. --grpc_python_out=. \
  exporter/identity/podresources_pb/api.proto
"$PYTHON" -c 'import grpc_tools, google.protobuf, grpc; print("generated with grpcio-tools", __import__("importlib.metadata").metadata.version("grpcio-tools"), "protobuf", google.protobuf.__version__)'
