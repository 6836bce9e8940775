"""An Istio CA we did not write the protocol code of: Istio's ca.proto (proto/istio/security/v1alpha1)
compiled at start by grpcio-tools, certificates signed by pyca/cryptography. It authenticates the caller
by its bearer token, issues the SPIFFE ID that token maps to (never the CSR's), honours the requested
validity, and logs each request as a JSON line. With --fail-after N, calls after the Nth answer
UNAVAILABLE (a CA that went down).

usage: ca_server.py HOST:PORT STATE_DIR TOKEN SPIFFE_ID [--fail-after N]
STATE_DIR gets root-cert.pem (written before the port opens) and requests.jsonl.
"""
import atexit
import datetime
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
from concurrent import futures

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_tools import protoc

address, state_dir, token, spiffe_id = sys.argv[1:5]
fail_after = int(sys.argv[sys.argv.index("--fail-after") + 1]) if "--fail-after" in sys.argv else None

# Compile Istio's CA API from the repository's copy.
proto_root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "proto")
generated = tempfile.mkdtemp(prefix="ca-peer-")
atexit.register(shutil.rmtree, generated, True)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
status = protoc.main(["protoc", f"-I{proto_root}", f"-I{include}", f"--python_out={generated}",
                      f"--grpc_python_out={generated}", "istio/security/v1alpha1/ca.proto"])
if status != 0:
    sys.exit(f"protoc failed: {status}")
sys.path.insert(0, generated)
from istio.security.v1alpha1 import ca_pb2, ca_pb2_grpc  # noqa: E402

now = datetime.datetime.now(datetime.timezone.utc)
root_key = ec.generate_private_key(ec.SECP256R1())
root_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "python peer CA")])
root = (x509.CertificateBuilder().subject_name(root_name).issuer_name(root_name)
        .public_key(root_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(root_key, hashes.SHA256()))
root_pem = root.public_bytes(serialization.Encoding.PEM).decode()
with open(os.path.join(state_dir, "root-cert.pem.tmp"), "w") as f:
    f.write(root_pem)
os.rename(os.path.join(state_dir, "root-cert.pem.tmp"), os.path.join(state_dir, "root-cert.pem"))

log_lock = threading.Lock()
calls = 0


def log(entry):
    with log_lock, open(os.path.join(state_dir, "requests.jsonl"), "a") as f:
        f.write(json.dumps(entry) + "\n")


class CertificateService(ca_pb2_grpc.IstioCertificateServiceServicer):
    def CreateCertificate(self, request, context):
        global calls
        metadata = dict(context.invocation_metadata())
        calls += 1
        entry = {"call": calls, "validity_duration": request.validity_duration,
                 "authorization_ok": metadata.get("authorization") == f"Bearer {token}"}
        if fail_after is not None and calls > fail_after:
            log({**entry, "answer": "UNAVAILABLE"})
            context.abort(grpc.StatusCode.UNAVAILABLE, "CA down")
        if not entry["authorization_ok"]:
            log({**entry, "answer": "UNAUTHENTICATED"})
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "bad token")
        csr = x509.load_pem_x509_csr(request.csr.encode())
        if not csr.is_signature_valid:
            log({**entry, "answer": "INVALID_ARGUMENT"})
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "CSR signature")
        requested = [str(uri) for uri in csr.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value.get_values_for_type(x509.UniformResourceIdentifier)]
        issued_at = datetime.datetime.now(datetime.timezone.utc)
        lifetime = datetime.timedelta(seconds=request.validity_duration or 3600)
        leaf = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(root_name)
                .public_key(csr.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(issued_at - datetime.timedelta(seconds=1)).not_valid_after(issued_at + lifetime)
                .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=True)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                               critical=False)
                .sign(root_key, hashes.SHA256()))
        log({**entry, "answer": "OK", "csr_sans": requested, "csr_key": type(csr.public_key()).__name__})
        return ca_pb2.IstioCertificateResponse(
            cert_chain=[leaf.public_bytes(serialization.Encoding.PEM).decode(), root_pem])


server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
ca_pb2_grpc.add_IstioCertificateServiceServicer_to_server(CertificateService(), server)
server.add_insecure_port(address)
server.start()
print("listening", flush=True)
server.wait_for_termination()
