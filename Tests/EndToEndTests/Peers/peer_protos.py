"""Compiles .proto files for the Python peers at run time with grpcio-tools into a temporary directory
(removed at exit), so no generated code is committed: Istio's API transcriptions (istio_api.py) and the
test echo service (echo.proto, load_echo_api)."""
import atexit
import os
import shutil
import sys
import tempfile

from grpc_tools import protoc

PEERS = os.path.dirname(os.path.abspath(__file__))


def compile_protos(source, *files, grpc=True):
    """Compiles files (paths relative to source) and returns the directory that holds the generated modules."""
    generated = tempfile.mkdtemp(prefix="peer-protos-")
    atexit.register(shutil.rmtree, generated, True)
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    outputs = [f"--python_out={generated}"] + ([f"--grpc_python_out={generated}"] if grpc else [])
    status = protoc.main(["protoc", f"-I{source}", f"-I{include}", *outputs, *files])
    if status != 0:
        sys.exit(f"protoc failed on {', '.join(files)} in {source}: {status}")
    return generated


def load_echo_api():
    """Returns (echo_pb2, echo_pb2_grpc) for package capstan.test (echo.proto)."""
    sys.path.insert(0, compile_protos(PEERS, "echo.proto"))
    import echo_pb2
    import echo_pb2_grpc
    return echo_pb2, echo_pb2_grpc
