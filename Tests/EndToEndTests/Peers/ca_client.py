"""A CA client we did not write the protocol code of: Istio's published ca.proto (the transcription in
istio-api/) compiled at start by grpcio-tools, the key and CSR made by pyca/cryptography. It does what
pilot-agent does against a CA, and prints what it received as one JSON object.

usage:
  ca_client.py cacerts DIRECTORY
      writes an Istio cacerts directory made by pyca/cryptography: an intermediate (ca-cert.pem,
      ca-key.pem) signed by the first of two roots, cert-chain.pem, and root-cert.pem with both roots
      (a root rotation in progress).
  ca_client.py request HOST:PORT ROOT_CERT_FILE TOKEN
      asks the CA over TLS (istiod's name, istiod.istio-system.svc) for a certificate for a new key.
"""
import json
import os
import sys

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from istio_api import load_ca_api
from peer_certificates import ca_certificate, organization, pem


def write_cacerts(directory):
    root_key, next_root_key, key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = ca_certificate(organization("cluster.local"), root_key, organization("cluster.local"), root_key, days=30)
    next_root = ca_certificate(organization("cluster.local next"), next_root_key, organization("cluster.local next"), next_root_key, days=30)
    intermediate = ca_certificate(organization("cluster.local intermediate"), key, root.subject, root_key, days=30)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    files = {"ca-cert.pem": pem(intermediate), "cert-chain.pem": pem(intermediate) + pem(root),
             "root-cert.pem": pem(root) + pem(next_root),
             "ca-key.pem": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()).decode()}
    for name, text in files.items():
        with open(os.path.join(directory, name), "w") as f:
            f.write(text)
    os.chmod(os.path.join(directory, "ca-key.pem"), 0o600)


def request(address, root_file, token):
    ca_pb2, ca_pb2_grpc = load_ca_api()
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
           .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier("spiffe://cluster.local/ns/shop/sa/someone-else")]),
                          critical=False)
           .sign(key, hashes.SHA256()))
    with open(root_file, "rb") as f:
        credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
    channel = grpc.secure_channel(address, credentials, options=[("grpc.ssl_target_name_override", "istiod.istio-system.svc")])
    stub = ca_pb2_grpc.IstioCertificateServiceStub(channel)
    response = stub.CreateCertificate(
        ca_pb2.IstioCertificateRequest(csr=csr.public_bytes(serialization.Encoding.PEM).decode(), validity_duration=3600),
        metadata=[("authorization", f"Bearer {token}"), ("clusterid", "Kubernetes")], timeout=10)

    entries = list(response.cert_chain)
    parsed = [x509.load_pem_x509_certificates(entry.encode()) for entry in entries]
    flat = [certificate for entry in parsed for certificate in entry]
    result = {
        "entries": len(entries),
        "certificates_per_entry": [len(entry) for entry in parsed],
        "entries_end_with_newline": all(entry.endswith("\n") for entry in entries),
        "has_root_cert": response.HasField("root_cert"),
        "leaf_key_matches": flat[0].public_key().public_numbers() == key.public_key().public_numbers() if flat else False,
        "leaf_uris": [str(uri) for uri in flat[0].extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value.get_values_for_type(x509.UniformResourceIdentifier)] if flat else [],
        "subjects": [certificate.subject.rfc4514_string() for certificate in flat],
        "self_signed": [certificate.subject == certificate.issuer for certificate in flat],
    }
    # Each certificate is signed by the next, up to the first root (a self-signed one).
    verified = []
    for child, parent in zip(flat, flat[1:]):
        if child.subject == child.issuer:
            break
        try:
            child.verify_directly_issued_by(parent)
            verified.append(True)
        except Exception as error:  # noqa: BLE001 (reported, not raised)
            verified.append(f"{child.subject.rfc4514_string()}: {error}")
    result["issued_by_next"] = verified
    print(json.dumps(result))


if __name__ == "__main__":
    if sys.argv[1:2] == ["cacerts"] and len(sys.argv) == 3:
        write_cacerts(sys.argv[2])
    elif sys.argv[1:2] == ["request"] and len(sys.argv) == 5:
        request(*sys.argv[2:5])
    else:
        sys.exit(__doc__)
