"""An Istio CA we did not write the protocol code of: Istio's published ca.proto (the transcription in
istio-api/) compiled at start by grpcio-tools, certificates signed by pyca/cryptography through an
intermediate. It authenticates the caller by its bearer token, issues the SPIFFE ID that token maps to
(never the CSR's), honours the requested validity, and logs each request as a JSON line. The trust bundle
holds two roots (the signing one and a second, as during a root rotation). With --fail-after N, calls
after the Nth answer UNAVAILABLE (a CA that went down).

--form says how the answer is shaped, as Istio's API allows:
  istiod        cert_chain [leaf, intermediate, root1, root2], one certificate an entry (istiod's form);
  concatenated  cert_chain [leaf, intermediate, root1+root2] (the older form the API describes);
  roots         cert_chain [leaf, intermediate], root_cert.ca_cert [root1, root2] (the newer form).

usage: ca_server.py HOST:PORT STATE_DIR TOKEN SPIFFE_ID [--fail-after N] [--form istiod|concatenated|roots]
STATE_DIR gets root-cert.pem (the bundle, written before the port opens) and requests.jsonl.
"""
import datetime
import json
import os
import signal
import sys
import threading
from concurrent import futures

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from istio_api import load_ca_api
from peer_certificates import ca_certificate, organization, pem

address, state_dir, token, spiffe_id = sys.argv[1:5]
fail_after = int(sys.argv[sys.argv.index("--fail-after") + 1]) if "--fail-after" in sys.argv else None
form = sys.argv[sys.argv.index("--form") + 1] if "--form" in sys.argv else "istiod"
if form not in ("istiod", "concatenated", "roots"):
    sys.exit(f"unknown --form {form}")
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
ca_pb2, ca_pb2_grpc = load_ca_api()

root_key, other_root_key, signing_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
root = ca_certificate(organization("python peer root"), root_key, organization("python peer root"), root_key)
other_root = ca_certificate(organization("python peer next root"), other_root_key, organization("python peer next root"), other_root_key)
signing_name = organization("python peer intermediate")
intermediate = ca_certificate(signing_name, signing_key, root.subject, root_key)
root_pems = [pem(root), pem(other_root)]
with open(os.path.join(state_dir, "root-cert.pem.tmp"), "w") as f:
    f.write("".join(root_pems))
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
        leaf = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(signing_name)
                .public_key(csr.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(issued_at - datetime.timedelta(seconds=1)).not_valid_after(issued_at + lifetime)
                .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=True)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                               critical=False)
                .sign(signing_key, hashes.SHA256()))
        log({**entry, "answer": "OK", "form": form, "csr_sans": requested, "csr_key": type(csr.public_key()).__name__})
        chain = [pem(leaf), pem(intermediate)]
        if form == "istiod":
            return ca_pb2.IstioCertificateResponse(cert_chain=chain + root_pems)
        if form == "concatenated":
            return ca_pb2.IstioCertificateResponse(cert_chain=chain + ["".join(root_pems)])
        return ca_pb2.IstioCertificateResponse(cert_chain=chain, root_cert=ca_pb2.Roots(ca_cert=root_pems))


server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
ca_pb2_grpc.add_IstioCertificateServiceServicer_to_server(CertificateService(), server)
server.add_insecure_port(address)
server.start()
print("listening", flush=True)
server.wait_for_termination()
