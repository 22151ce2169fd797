"""Generated stubs for the kubelet pod-resources v1 API (k8s.io/kubelet, vendored api.proto).

Do not edit api_pb2.py / api_pb2_grpc.py by hand: run ./regen.sh. Importing them needs
protobuf at least as new as the one they were generated with (see the header of api_pb2.py)
and grpcio at least GRPC_GENERATED_VERSION in api_pb2_grpc.py.
"""
