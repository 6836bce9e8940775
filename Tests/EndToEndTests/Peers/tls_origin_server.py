"""An HTTPS server standing in for a service on the internet, for TLS origination tests.

It makes its own CA and a server certificate for --host (pyca/cryptography), writes the CA to --ca-out
for the proxy to trust, and serves HTTPS on --listen. With --client-cert-out, it also writes a client
certificate (CN capstan-client) and its key (--client-key-out) from the same CA, and then requires a
client certificate from that CA on every connection (mutual TLS). A handshake whose SNI is not --host is refused
(alert unrecognized_name), so a client that sends no SNI, or the wrong one, gets no answer. Each
request is answered 200 with JSON: the SNI it came with, its Host header and path. Prints READY.
"""
import argparse
import datetime
import json
import ssl
import tempfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from peer_certificates import ca_certificate, organization, pem


def server_certificate(host, ca_key, ca_name, client=False):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    usage = x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH if client else x509.oid.ExtendedKeyUsageOID.SERVER_AUTH
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
               .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
    if not client:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
    certificate = builder.sign(ca_key, hashes.SHA256())
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return pem(certificate), key_pem


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", required=True, help="IP:PORT")
    parser.add_argument("--host", required=True, help="the name in the certificate, and the only SNI accepted")
    parser.add_argument("--ca-out", required=True, help="where the CA certificate (PEM) is written")
    parser.add_argument("--client-cert-out", help="write a client certificate here and require one (mutual TLS)")
    parser.add_argument("--client-key-out", help="where the client certificate's key is written")
    arguments = parser.parse_args()

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = organization("external test CA")
    ca = ca_certificate(ca_name, ca_key, ca_name, ca_key)
    with open(arguments.ca_out, "w") as out:
        out.write(pem(ca))
    chain, key = server_certificate(arguments.host, ca_key, ca_name)

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.NamedTemporaryFile("w", suffix=".pem") as cert_file, tempfile.NamedTemporaryFile("w", suffix=".pem") as key_file:
        cert_file.write(chain)
        cert_file.flush()
        key_file.write(key)
        key_file.flush()
        context.load_cert_chain(cert_file.name, key_file.name)
    seen = {}

    def check_sni(connection, name, _context):
        if name != arguments.host:
            print(f"refused SNI {name!r}", flush=True)
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        seen[id(connection)] = name
        seen["last"] = name
        return None

    context.sni_callback = check_sni
    if arguments.client_cert_out:
        client_chain, client_key = server_certificate("capstan-client", ca_key, ca_name, client=True)
        with open(arguments.client_cert_out, "w") as out:
            out.write(client_chain)
        with open(arguments.client_key_out, "w") as out:
            out.write(client_key)
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cadata=pem(ca))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            peer = self.connection.getpeercert() or {}
            client = next((value for rdn in peer.get("subject", ()) for key, value in rdn if key == "commonName"), None)
            body = json.dumps({"sni": seen.get(id(self.connection), seen.get("last")), "host": self.headers.get("host"),
                               "path": self.path, "client": client}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args):
            print("request:", format % args, flush=True)

    address, port = arguments.listen.rsplit(":", 1)
    server = ThreadingHTTPServer((address, int(port)), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print("READY", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
