"""A TLS client that speaks as a sidecar originating Istio's mutual TLS: the SNI and ALPN it is given
(a sidecar sends outbound_.PORT_.SUBSET_.HOST and istio-peer-exchange, istio), the workload certificate
and key it is given (none: no client certificate), the server verified against the mesh root (its name
is not checked: workloads are known by their SPIFFE IDs). Tests run it inside a network namespace they
made.

usage:
  mesh_tls_client.py --connect HOST:PORT --sni NAME --ca ROOT.pem [--cert CHAIN.pem --key KEY.pem]
                     [--alpn a,b] [--send TEXT] [--timeout S]
      Connects, sends TEXT (with a newline), and reads until TEXT has come back or the server closes.
      Prints {"peer_uris": the server certificate's URI SANs, "alpn": the protocol agreed (or null),
      "received": what came back}. A connection or handshake that fails prints {"error": ...} and exits 2.
"""
import argparse
import json
import socket
import ssl
import sys


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--connect", required=True)
    parser.add_argument("--sni", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--alpn", default="istio-peer-exchange,istio")
    parser.add_argument("--send", default="hello")
    parser.add_argument("--timeout", type=float, default=5)
    arguments = parser.parse_args()
    host, port = arguments.connect.rsplit(":", 1)

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(arguments.ca)
    if arguments.cert:
        context.load_cert_chain(arguments.cert, arguments.key)
    if arguments.alpn:
        context.set_alpn_protocols(arguments.alpn.split(","))

    received = b""
    try:
        with socket.create_connection((host, int(port)), timeout=arguments.timeout) as raw:
            with context.wrap_socket(raw, server_hostname=arguments.sni) as tls:
                names = tls.getpeercert().get("subjectAltName", ())
                uris = [value for kind, value in names if kind == "URI"]
                payload = (arguments.send + "\n").encode()
                tls.sendall(payload)
                while payload not in received:
                    chunk = tls.recv(65536)
                    if not chunk:
                        break
                    received += chunk
                result = {"peer_uris": uris, "alpn": tls.selected_alpn_protocol(), "received": received.decode(errors="replace")}
    except (OSError, ssl.SSLError) as error:
        print(json.dumps({"error": f"{type(error).__name__}: {error}", "received": received.decode(errors="replace")}))
        print(f"mesh_tls_client: {error}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
