"""Real clients for the HTTP end-to-end tests, which print what they saw as one JSON object on stdout:
httpx (HTTP/1.1, or HTTP/2 with prior knowledge over cleartext, through h2), grpcio (the test echo service,
echo.proto, compiled at start by grpcio-tools) and websockets. None of them reads proxy settings from the
environment. Tests run it inside a network namespace they made.

usage:
  http_client.py httpx URL [--http2] [--count N] [--body-bytes N] [--method M] [--header NAME:VALUE ...] [--tally]
      N requests (default 1), one after the other on one connection. A body of N bytes (byte i is i % 251;
      POST unless --method says otherwise) goes with each. Prints {"requests": [{"status", "upstream"
      (x-upstream-name or null), "http_version", "local_port" (the same for all: one connection), "elapsed_ms",
      "body_bytes" (received), "body_sha_ok", "json" (the body, when it is JSON)}]}. body_sha_ok is
      checked against x-body-sha256 when the response has it (/bytes/N), against the request body for
      /echo, and against the upstream's body_sha256 (what it received) when the body is http_upstream.py's
      JSON; null when there is nothing to check. With --tally, only how many requests got each status and
      the client ports used: {"statuses": {"200": N, ...}, "local_ports": [...]} (for thousands of requests).
  http_client.py grpc TARGET unary|server-stream|bidi [--fail-with CODE] [--authority A] [--message M]
                      [--repeat N] [--count N] [--calls N] [--metadata KEY=VALUE ...] [--timeout S]
      One call of capstan.test.Echo (bidi: --count requests, default 3; --fail-with goes with the last), or
      with unary --calls N, N calls on one channel.
      Prints {"messages": [...], "code", "details", "initial_metadata", "trailing_metadata"}. Exits 0 when
      the call ends with the expected code (OK, or CODE, a number or a name such as NOT_FOUND), else 1.
  http_client.py ws URL --messages N [--binary] [--header NAME:VALUE ...]
      Opens a WebSocket, sends N messages, reads their echoes. Prints {"status", "upstream", "echoes",
      "all_match"}.

A transport error (refused, reset, timeout, an HTTP answer where a WebSocket handshake was expected) prints
what was seen so far with "error", writes a one-line reason on stderr and exits 2.
"""
import argparse
import hashlib
import json
import sys
import time

PATTERN_PERIOD = 251


def pattern_body(size):
    """Byte i is i % 251, as http_upstream.py's /bytes/N."""
    return (bytes(range(PATTERN_PERIOD)) * (size // PATTERN_PERIOD + 1))[:size]


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def headers_from(pairs):
    headers = []
    for pair in pairs or []:
        name, separator, value = pair.partition(":")
        if not separator:
            sys.exit(f"http_client.py: --header wants NAME:VALUE, got {pair!r}")
        headers.append((name.strip(), value.strip()))
    return headers


def finish(result, error=None):
    if error is not None:
        result["error"] = error
    print(json.dumps(result, indent=1))
    if error is not None:
        print(f"http_client.py: {error}", file=sys.stderr)
        sys.exit(2)


def run_httpx(arguments):
    import httpx

    body = pattern_body(arguments.body_bytes) if arguments.body_bytes is not None else None
    method = arguments.method or ("POST" if body is not None else "GET")
    headers = headers_from(arguments.header)
    result = {"requests": []}
    statuses, ports = {}, set()
    # http1=False with http2=True: HTTP/2 with prior knowledge on a cleartext URL.
    with httpx.Client(http1=not arguments.http2, http2=arguments.http2, trust_env=False,
                      timeout=arguments.timeout) as client:
        for _ in range(arguments.count):
            try:
                response = client.request(method, arguments.url, content=body, headers=headers)
            except httpx.TransportError as error:
                finish(result, f"{type(error).__name__}: {error or 'no detail'} ({arguments.url})")
            stream = response.extensions.get("network_stream")
            local = stream.get_extra_info("client_addr") if stream is not None else None
            if arguments.tally:
                statuses[str(response.status_code)] = statuses.get(str(response.status_code), 0) + 1
                if local:
                    ports.add(local[1])
                continue
            entry = {"status": response.status_code, "upstream": response.headers.get("x-upstream-name"),
                     "http_version": response.http_version, "local_port": local[1] if local else None,
                     "elapsed_ms": response.elapsed.total_seconds() * 1000,
                     "body_bytes": len(response.content), "body_sha_ok": None}
            if "x-body-sha256" in response.headers:
                entry["body_sha_ok"] = sha256(response.content) == response.headers["x-body-sha256"]
            elif response.url.path == "/echo" and response.status_code == 200:
                entry["body_sha_ok"] = response.content == (body or b"")
            if response.headers.get("content-type", "").startswith("application/json"):
                try:
                    entry["json"] = response.json()
                except ValueError:
                    entry["json"] = None
                if isinstance(entry["json"], dict) and "body_sha256" in entry["json"]:
                    entry["body_sha_ok"] = entry["json"]["body_sha256"] == sha256(body or b"")
            result["requests"].append(entry)
    if arguments.tally:
        result = {"statuses": statuses, "local_ports": sorted(ports)}
    finish(result)


def run_grpc(arguments):
    import grpc
    from peer_protos import load_echo_api

    echo_pb2, echo_pb2_grpc = load_echo_api()
    codes = {code.name: code for code in grpc.StatusCode} | {str(code.value[0]): code for code in grpc.StatusCode}
    expected = grpc.StatusCode.OK
    if arguments.fail_with is not None:
        expected = codes.get(arguments.fail_with.upper())
        if expected is None:
            sys.exit(f"http_client.py: unknown gRPC status code {arguments.fail_with!r}")
    fail_with = expected.value[0]

    options = [("grpc.enable_http_proxy", 0)]
    if arguments.authority:
        options.append(("grpc.default_authority", arguments.authority))
    metadata = []
    for pair in arguments.metadata or []:
        key, separator, value = pair.partition("=")
        if not separator:
            sys.exit(f"http_client.py: --metadata wants KEY=VALUE, got {pair!r}")
        metadata.append((key.lower(), value))

    def request(text, fail=True):
        return echo_pb2.EchoRequest(message=text, repeat=arguments.repeat, fail_with_code=fail_with if fail else 0)

    def as_dict(pairs):
        return {key: (value.hex() if isinstance(value, bytes) else value) for key, value in (pairs or ())}

    result = {"messages": [], "code": None, "details": None, "initial_metadata": {}, "trailing_metadata": {}}
    with grpc.insecure_channel(arguments.target, options=options) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        call = None
        try:
            if arguments.kind == "unary":
                # --calls N: N calls one after the other on the channel's one HTTP/2 connection.
                replies = []
                for _ in range(arguments.calls):
                    reply, call = stub.Unary.with_call(request(arguments.message), timeout=arguments.timeout, metadata=metadata)
                    replies.append(reply)
            elif arguments.kind == "server-stream":
                call = stub.ServerStream(request(arguments.message), timeout=arguments.timeout, metadata=metadata)
                replies = call
            else:
                requests = [request(f"{arguments.message} {index}", fail=index == arguments.count - 1)
                            for index in range(arguments.count)]
                call = stub.BidiStream(iter(requests), timeout=arguments.timeout, metadata=metadata)
                replies = call
            for reply in replies:
                result["messages"].append({"message": reply.message, "name": reply.name, "index": reply.index,
                                           "metadata": dict(reply.metadata)})
            code, details = call.code(), call.details()
            initial, trailing = call.initial_metadata(), call.trailing_metadata()
        except grpc.RpcError as error:
            code, details = error.code(), error.details()
            initial, trailing = error.initial_metadata(), error.trailing_metadata()
    result.update(code=code.name, details=details, initial_metadata=as_dict(initial), trailing_metadata=as_dict(trailing))
    print(json.dumps(result, indent=1))
    if code != expected:
        print(f"http_client.py: the call ended with {code.name} ({details}), expected {expected.name}", file=sys.stderr)
        sys.exit(1)


def run_ws(arguments):
    from websockets.exceptions import InvalidHandshake, WebSocketException
    from websockets.sync.client import connect

    result = {"status": None, "upstream": None, "echoes": [], "all_match": False}
    try:
        with connect(arguments.url, additional_headers=headers_from(arguments.header), proxy=None, compression=None,
                     open_timeout=arguments.timeout, close_timeout=arguments.timeout) as socket:
            result["status"] = socket.response.status_code
            result["upstream"] = socket.response.headers.get("x-upstream-name")
            sent = []
            for index in range(arguments.messages):
                if index and arguments.pause:
                    time.sleep(arguments.pause)
                message = f"message {index}".encode() if arguments.binary else f"message {index}"
                socket.send(message)
                sent.append(message)
                echo = socket.recv(timeout=arguments.timeout)
                result["echoes"].append(echo.hex() if isinstance(echo, bytes) else echo)
            result["all_match"] = [bytes.fromhex(e) if arguments.binary else e for e in result["echoes"]] == sent
    except InvalidHandshake as error:
        status = getattr(getattr(error, "response", None), "status_code", None)
        result["status"] = status
        finish(result, f"WebSocket handshake refused ({status or error}) at {arguments.url}")
    except (OSError, TimeoutError, WebSocketException) as error:
        finish(result, f"{type(error).__name__}: {error or 'no detail'} ({arguments.url})")
    finish(result)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    httpx_command = commands.add_parser("httpx", help="HTTP requests with httpx")
    httpx_command.add_argument("url")
    httpx_command.add_argument("--http2", action="store_true", help="HTTP/2 with prior knowledge")
    httpx_command.add_argument("--count", type=int, default=1)
    httpx_command.add_argument("--body-bytes", type=int)
    httpx_command.add_argument("--method")
    httpx_command.add_argument("--header", action="append", metavar="NAME:VALUE")
    httpx_command.add_argument("--timeout", type=float, default=10.0)
    httpx_command.add_argument("--tally", action="store_true", help="print only the count of each status")
    httpx_command.set_defaults(run=run_httpx)

    grpc_command = commands.add_parser("grpc", help="a call of capstan.test.Echo with grpcio")
    grpc_command.add_argument("target", help="HOST:PORT")
    grpc_command.add_argument("kind", choices=["unary", "server-stream", "bidi"])
    grpc_command.add_argument("--fail-with", metavar="CODE")
    grpc_command.add_argument("--authority")
    grpc_command.add_argument("--message", default="hello")
    grpc_command.add_argument("--repeat", type=int, default=1, help="replies per request (streaming calls)")
    grpc_command.add_argument("--count", type=int, default=3, help="requests of a bidi call")
    grpc_command.add_argument("--calls", type=int, default=1, help="unary calls, one after the other on one channel")
    grpc_command.add_argument("--metadata", action="append", metavar="KEY=VALUE")
    grpc_command.add_argument("--timeout", type=float, default=10.0)
    grpc_command.set_defaults(run=run_grpc)

    ws_command = commands.add_parser("ws", help="a WebSocket echo with websockets")
    ws_command.add_argument("url")
    ws_command.add_argument("--messages", type=int, required=True)
    ws_command.add_argument("--binary", action="store_true")
    ws_command.add_argument("--header", action="append", metavar="NAME:VALUE")
    ws_command.add_argument("--timeout", type=float, default=10.0)
    ws_command.add_argument("--pause", type=float, default=0.0, help="seconds between messages")
    ws_command.set_defaults(run=run_ws)

    arguments = parser.parse_args()
    arguments.run(arguments)


if __name__ == "__main__":
    main()
