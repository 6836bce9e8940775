"""An external authorization service for the ext_authz end-to-end test, built from Envoy's published API
(the PyPI xds-protos package's envoy.service.auth.v3, never Capstan's proto/) and grpcio. Tests run it
inside a network namespace they made.

usage: ext_authz_server.py --listen IP:PORT [--allow-principal SPIFFE_ID ...]

Authorization/Check allows a request whose headers have `x-allow: yes`, adding `x-ext-authz: checked` to
it; any other is denied: 403 with the body "denied by ext_authz" and `x-ext-authz-denied: yes`. Prints READY
once serving, and `CHECK METHOD HOST PATH ALLOWED|DENIED body='BODY'` for each check (HOST: the request's
host; BODY: the request body it was sent, with_request_body), so a test can see what it was asked.

A check without an HTTP request (the network filter's, about a TCP connection) is allowed when its source
principal is one of --allow-principal, and printed as `CHECK TCP PRINCIPAL ALLOWED|DENIED`.
"""
import argparse
import sys
from concurrent import futures

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2, status_pb2


class Authorization(external_auth_pb2_grpc.AuthorizationServicer):
    def __init__(self, allowed_principals):
        self.allowed_principals = set(allowed_principals)

    def Check(self, request, context):
        if not request.attributes.HasField("request"):
            principal = request.attributes.source.principal
            allowed = principal in self.allowed_principals
            print(f"CHECK TCP {principal} {'ALLOWED' if allowed else 'DENIED'}", flush=True)
            code = code_pb2.OK if allowed else code_pb2.PERMISSION_DENIED
            return external_auth_pb2.CheckResponse(status=status_pb2.Status(code=code))
        http = request.attributes.request.http
        allowed = http.headers.get("x-allow") == "yes"
        print(f"CHECK {http.method} {http.host} {http.path} {'ALLOWED' if allowed else 'DENIED'} body={http.body!r}", flush=True)
        if allowed:
            return external_auth_pb2.CheckResponse(
                status=status_pb2.Status(code=code_pb2.OK),
                ok_response=external_auth_pb2.OkHttpResponse(headers=[
                    base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key="x-ext-authz", value="checked"))]))
        return external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=code_pb2.PERMISSION_DENIED),
            denied_response=external_auth_pb2.DeniedHttpResponse(
                status=http_status_pb2.HttpStatus(code=http_status_pb2.Forbidden),
                headers=[base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key="x-ext-authz-denied", value="yes"))],
                body="denied by ext_authz"))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", required=True)
    parser.add_argument("--allow-principal", action="append", default=[])
    arguments = parser.parse_args()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(Authorization(arguments.allow_principal), server)
    if server.add_insecure_port(arguments.listen) == 0:
        sys.exit(f"cannot listen on {arguments.listen}")
    server.start()
    print("READY", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
