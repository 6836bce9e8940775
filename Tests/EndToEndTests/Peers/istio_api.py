"""Istio's CA API for the Python peers, compiled at start by grpcio-tools from the transcription of Istio's
published ca.proto in istio-api/ (never from the repository's proto/, so a peer cannot agree with a
mistake there)."""
import atexit
import os
import shutil
import sys
import tempfile

from grpc_tools import protoc


def load_ca_api():
    """Returns (ca_pb2, ca_pb2_grpc) for package istio.v1.auth."""
    source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "istio-api")
    generated = tempfile.mkdtemp(prefix="istio-api-")
    atexit.register(shutil.rmtree, generated, True)
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    status = protoc.main(["protoc", f"-I{source}", f"-I{include}", f"--python_out={generated}",
                          f"--grpc_python_out={generated}", "security/v1alpha1/ca.proto"])
    if status != 0:
        sys.exit(f"protoc failed on the Istio API transcription: {status}")
    sys.path.insert(0, generated)
    from security.v1alpha1 import ca_pb2, ca_pb2_grpc
    return ca_pb2, ca_pb2_grpc
