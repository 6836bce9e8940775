"""An upstream application server for the HTTP end-to-end tests, built from HTTP libraries we did not write:
Hypercorn (h11 for HTTP/1.x, h2 for HTTP/2, wsproto for WebSocket) serves a small ASGI application on one
port, and grpcio serves the test echo service (echo.proto, compiled at start by grpcio-tools) on another.
Tests run it inside a network namespace they made.

usage: http_upstream.py --listen IP:PORT --name NAME [--grpc-port N] [--keep-alive-timeout SECONDS]
                         [--fail-status NNN] [--log-requests] [--report-client]

The HTTP port speaks HTTP/1.1 (keep-alive, chunked requests, Expect: 100-continue, which Hypercorn answers
before the application reads the body), HTTP/1.0, and HTTP/2 over cleartext with prior knowledge (Hypercorn
recognizes the HTTP/2 preface). Every response carries `x-upstream-name: NAME`. By path:
  /status/NNN     answers status NNN, 200 to 599 (with the JSON below as body, unless NNN or HEAD allows none);
  /bytes/N        answers N bytes of a fixed pattern (byte i is i % 251), streamed in chunks of 16 KiB
                  (?chunk=SIZE to change), with content-length and `x-body-sha256: <hex>`;
  /delay/MS       waits MS milliseconds, then answers the JSON below;
  /echo           streams the request body back as it arrives (no content-length: chunked on HTTP/1.1);
  /ws             WebSocket (RFC 6455 upgrade over HTTP/1.1): echoes every text or binary message;
  anything else   answers 200 with the JSON below.
With --fail-status NNN, every HTTP request (whatever its path) is answered NNN with the JSON below, and
`FAILED METHOD PATH` is printed on stdout for each, so a test can count what reached this server.
With --log-requests, `REQUEST METHOD HOST PATH` (HOST: the Host header, or :authority on HTTP/2) is printed
on stdout for every HTTP request as it arrives, so a test can see what reached this server and how it was
addressed.
The JSON: {"name", "method", "path" (the request target, query included), "http_version" ("HTTP/1.0",
"HTTP/1.1" or "HTTP/2"), "headers" ({lower-case name: value, or a list of values when repeated; on
HTTP/2, `host` holds :authority}), "body_bytes", "body_sha256"}; with --report-client, also "client" (the
connection's source address).

With --grpc-port, capstan.test.Echo is served on the same IP: replies carry NAME and the request metadata,
and a non-zero fail_with_code ends the call with that status. Every gRPC response has the initial metadata
`x-upstream-name: NAME`.

An idle keep-alive connection is closed after --keep-alive-timeout seconds (default 75, as nginx). It
prints READY on stdout once every port listens, and exits 0 on SIGTERM or SIGINT: requests and WebSockets
still open after a 2-second grace period are cut (a 500, a WebSocket close 1011).
"""
import argparse
import asyncio
import hashlib
import json
import signal
import socket
import sys

import grpc
from hypercorn.asyncio import serve
from hypercorn.config import Config

from peer_protos import load_echo_api

CHUNK = 16384
PATTERN_PERIOD = 251
# Long enough to slice any chunk at any phase of the pattern.
PATTERN = bytes(range(PATTERN_PERIOD)) * (1024 * 1024 // PATTERN_PERIOD + 2)
MAX_CHUNK = len(PATTERN) - PATTERN_PERIOD


def pattern_chunks(size, chunk=CHUNK):
    """The /bytes body: byte i is i % 251, in chunks of at most `chunk` bytes."""
    offset = 0
    while offset < size:
        length = min(chunk, size - offset)
        start = offset % PATTERN_PERIOD
        yield PATTERN[start:start + length]
        offset += length


_pattern_digests = {}


def pattern_sha256(size):
    if size not in _pattern_digests:
        digest = hashlib.sha256()
        for piece in pattern_chunks(size, MAX_CHUNK):
            digest.update(piece)
        _pattern_digests[size] = digest.hexdigest()
    return _pattern_digests[size]


def parse_listen(text):
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected IP:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def header_map(raw_headers):
    """{lower-case name: value}, with a list of values for a repeated name."""
    headers = {}
    for raw_name, raw_value in raw_headers:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        if name not in headers:
            headers[name] = value
        elif isinstance(headers[name], list):
            headers[name].append(value)
        else:
            headers[name] = [headers[name], value]
    return headers


def request_target(scope):
    target = scope["raw_path"].decode("latin-1")
    if scope["query_string"]:
        target += "?" + scope["query_string"].decode("latin-1")
    return target


def query_parameters(scope):
    parameters = {}
    for pair in scope["query_string"].decode("latin-1").split("&"):
        name, _, value = pair.partition("=")
        if name:
            parameters[name] = value
    return parameters


class Application:
    """The ASGI application behind the HTTP port."""

    def __init__(self, name, fail_status=None, log_requests=False, report_client=False):
        self.name = name
        self.fail_status = fail_status
        self.log_requests = log_requests
        self.report_client = report_client
        self.name_header = (b"x-upstream-name", name.encode())

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        elif scope["type"] == "websocket":
            await self.websocket(scope, receive, send)
        else:
            await self.http(scope, receive, send)

    async def http(self, scope, receive, send):
        segments = scope["path"].strip("/").split("/")
        argument = segments[1] if len(segments) == 2 else None
        if self.log_requests:
            host = header_map(scope["headers"]).get("host", "-")
            print(f"REQUEST {scope['method']} {host} {request_target(scope)}", flush=True)
        if self.fail_status is not None:
            print(f"FAILED {scope['method']} {request_target(scope)}", flush=True)
            segments, argument = ["status"], str(self.fail_status)
        if segments[0] == "echo" and len(segments) == 1:
            return await self.echo(scope, receive, send)
        if segments[0] == "bytes" and argument is not None and argument.isdigit():
            await self.drain(receive)
            return await self.pattern(scope, int(argument), send)
        status = 200
        if segments[0] == "status" and argument is not None and argument.isdigit() and 200 <= int(argument) <= 599:
            status = int(argument)
        body_bytes, body_sha256 = await self.drain(receive)
        if segments[0] == "delay" and argument is not None and argument.isdigit():
            await asyncio.sleep(int(argument) / 1000)
        version = scope["http_version"]
        description = {
            "name": self.name, "method": scope["method"], "path": request_target(scope),
            "http_version": "HTTP/2" if version == "2" else f"HTTP/{version}",
            "headers": header_map(scope["headers"]), "body_bytes": body_bytes, "body_sha256": body_sha256,
        }
        if self.report_client:
            description["client"] = (scope.get("client") or ["-"])[0]
        body = b"" if status in (204, 304) else json.dumps(description).encode() + b"\n"
        headers = [self.name_header, (b"content-type", b"application/json")]
        if status != 204:
            headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})

    async def drain(self, receive):
        """Reads the whole request body, without keeping it: (length, sha256 hex)."""
        digest, length = hashlib.sha256(), 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            digest.update(message.get("body", b""))
            length += len(message.get("body", b""))
            if not message.get("more_body", False):
                break
        return length, digest.hexdigest()

    async def pattern(self, scope, size, send):
        chunk = query_parameters(scope).get("chunk", "")
        chunk = min(int(chunk), MAX_CHUNK) if chunk.isdigit() and int(chunk) > 0 else CHUNK
        headers = [self.name_header, (b"content-type", b"application/octet-stream"),
                   (b"content-length", str(size).encode()), (b"x-body-sha256", pattern_sha256(size).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if scope["method"] != "HEAD":
            for piece in pattern_chunks(size, chunk):
                await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def echo(self, scope, receive, send):
        content_type = dict(scope["headers"]).get(b"content-type", b"application/octet-stream")
        await send({"type": "http.response.start", "status": 200,
                    "headers": [self.name_header, (b"content-type", content_type)]})
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            if message.get("body"):
                await send({"type": "http.response.body", "body": message["body"], "more_body": True})
            if not message.get("more_body", False):
                break
        await send({"type": "http.response.body", "body": b""})

    async def websocket(self, scope, receive, send):
        message = await receive()  # websocket.connect
        if scope["path"] != "/ws":
            await send({"type": "websocket.close", "code": 1008})  # refused before the handshake: 403
            return
        await send({"type": "websocket.accept", "headers": [self.name_header]})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await send({"type": "websocket.send", "text": message["text"]})
            else:
                await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})


def echo_servicer(name, echo_pb2, echo_pb2_grpc):
    codes = {code.value[0]: code for code in grpc.StatusCode}

    def reply(request, context, index):
        metadata = {}
        for key, value in context.invocation_metadata():
            value = value.hex() if isinstance(value, bytes) else value
            metadata[key] = f"{metadata[key]},{value}" if key in metadata else value
        return echo_pb2.EchoReply(message=request.message, name=name, index=index, metadata=metadata)

    async def fail(request, context):
        code = codes.get(request.fail_with_code, grpc.StatusCode.UNKNOWN)
        await context.abort(code, f"{name} fails with code {request.fail_with_code} as asked")

    class Echo(echo_pb2_grpc.EchoServicer):
        async def Unary(self, request, context):
            await context.send_initial_metadata((("x-upstream-name", name),))
            if request.fail_with_code:
                await fail(request, context)
            return reply(request, context, 0)

        async def ServerStream(self, request, context):
            await context.send_initial_metadata((("x-upstream-name", name),))
            for index in range(max(1, request.repeat)):
                yield reply(request, context, index)
            if request.fail_with_code:
                await fail(request, context)

        async def BidiStream(self, request_iterator, context):
            await context.send_initial_metadata((("x-upstream-name", name),))
            index = 0
            async for request in request_iterator:
                for _ in range(max(1, request.repeat)):
                    yield reply(request, context, index)
                    index += 1
                if request.fail_with_code:
                    await fail(request, context)

    return Echo()


def quiet_cancellation(loop, context):
    """Python 3.11's asyncio streams report the cancellation of a connection's task (Hypercorn cancels them
    when the grace period ends) as an error; that is the expected way out, not one."""
    if not isinstance(context.get("exception"), asyncio.CancelledError):
        loop.default_exception_handler(context)


async def main(arguments):
    host, port = arguments.listen
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, stop.set)
    loop.set_exception_handler(quiet_cancellation)

    # The HTTP socket is bound and listening before READY; Hypercorn serves it from its descriptor.
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    listener.bind((host, port))
    listener.listen(1024)
    config = Config()
    config.bind = [f"fd://{listener.detach()}"]
    config.keep_alive_timeout = arguments.keep_alive_timeout
    config.graceful_timeout = 2
    config.h11_max_incomplete_size = 96 * 1024  # request line and headers: above Envoy's 60 KiB default
    config.accesslog = None
    config.errorlog = "-"

    grpc_server = None
    if arguments.grpc_port is not None:
        echo_pb2, echo_pb2_grpc = load_echo_api()
        grpc_server = grpc.aio.server()
        echo_pb2_grpc.add_EchoServicer_to_server(echo_servicer(arguments.name, echo_pb2, echo_pb2_grpc), grpc_server)
        grpc_address = f"[{host}]:{arguments.grpc_port}" if ":" in host else f"{host}:{arguments.grpc_port}"
        if grpc_server.add_insecure_port(grpc_address) == 0:
            sys.exit(f"http_upstream.py: cannot listen on {grpc_address} for gRPC")
        await grpc_server.start()

    http_server = asyncio.create_task(serve(Application(arguments.name, arguments.fail_status, arguments.log_requests, arguments.report_client), config, shutdown_trigger=stop.wait))
    print("READY", flush=True)
    await http_server
    if grpc_server is not None:
        await grpc_server.stop(grace=1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", required=True, type=parse_listen, help="IP:PORT for HTTP")
    parser.add_argument("--name", required=True, help="returned in x-upstream-name and every JSON body")
    parser.add_argument("--grpc-port", type=int, help="also serve capstan.test.Echo on this port")
    parser.add_argument("--keep-alive-timeout", type=float, default=75.0,
                        help="seconds an idle keep-alive connection stays open (default 75, as nginx)")
    parser.add_argument("--fail-status", type=int, choices=range(200, 600), metavar="NNN",
                        help="answer every HTTP request with this status (and print FAILED for each)")
    parser.add_argument("--report-client", action="store_true",
                        help='add "client", the connection\'s source address, to every JSON body')
    parser.add_argument("--log-requests", action="store_true",
                        help="print REQUEST METHOD HOST PATH for every HTTP request")
    asyncio.run(main(parser.parse_args()))
