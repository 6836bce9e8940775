"""A check of dump_ads_server.py, to run by hand: for each Envoy config dump it starts the server and talks
to it as an ADS client built from Envoy's own generated code (grpcio and PyPI's xds-protos) would: CDS, then
EDS for the EDS clusters it got (half of them first, then all: an incremental subscription), LDS, RDS for
every route configuration the listeners' HTTP connection managers name, a NACK, and SDS over ADS and over
StreamSecrets. It ACKs every response and checks that
  - every listener, cluster and route configuration of the dump arrives, and reads back (json_format) to
    exactly the dump's JSON, so nothing was lost on the way (the counts are printed; istiod's 1.20.8 sidecar
    dump must give 16 listeners, 20 clusters and 9 route configurations);
  - EDS answers the requested set with the --endpoint / --default-endpoint addresses and the tlsMode metadata;
  - an ACK or a NACK gets no answer, and the request log holds every request, the NACK's error_detail too;
  - the server stops cleanly on SIGTERM.

usage: check_dump_ads_server.py [DUMP ...]
By default the sidecar and ingress gateway dumps of Istio 1.20.8 in ../shared/istio-config/ (beside the
repository), read in place. As root it runs itself in a throw-away network namespace (capstan-peers-PID,
deleted afterwards); otherwise on this namespace's 127.0.0.1. Exits non-zero on the first failed check.
"""
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading

PEERS = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.normpath(os.path.join(PEERS, "..", "..", "..", "..", "shared", "istio-config"))
DEFAULT_DUMPS = [os.path.join(SHARED, "sidecar-istio1.20.8-hello-openshift.config_dump.json"),
                 os.path.join(SHARED, "ingressgateway-istio1.20.8.config_dump.json")]
# What the brief of issue 15 counted in istiod's 1.20.8 sidecar dump.
KNOWN_COUNTS = {"sidecar-istio1.20.8-hello-openshift.config_dump.json": (16, 20, 9)}
NAMESPACE_VARIABLE = "CAPSTAN_PEERS_NAMESPACE"


def in_own_namespace():
    """As root, runs this script again inside a throw-away network namespace and exits with its status."""
    if os.geteuid() != 0 or os.environ.get(NAMESPACE_VARIABLE):
        return
    name = f"capstan-peers-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        status = subprocess.run(["ip", "netns", "exec", name, sys.executable, *sys.argv],
                                env={**os.environ, NAMESPACE_VARIABLE: name}).returncode
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)
    sys.exit(status)


in_own_namespace()

import grpc  # noqa: E402  (after the namespace switch: nothing to load in the parent)
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from envoy.config.core.v3 import base_pb2  # noqa: E402
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2  # noqa: E402
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2  # noqa: E402
from envoy.service.secret.v3 import sds_pb2_grpc  # noqa: E402
from google.protobuf import json_format  # noqa: E402
from google.rpc import status_pb2  # noqa: E402

import envoy_types  # noqa: E402
from peer_certificates import ca_certificate, organization, pem  # noqa: E402

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
DUMP = "type.googleapis.com/envoy.admin.v3."
NODE = base_pb2.Node(id="sidecar~127.0.0.1~check.default~default.svc.cluster.local", cluster="check.default")


class Failed(Exception):
    pass


def check(condition, message):
    if not condition:
        raise Failed(message)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def expected_resources(path):
    """The dump's listeners, clusters and route configurations as plain JSON, by name."""
    with open(path) as file:
        sections = {config["@type"]: config for config in json.load(file)["configs"]}
    listeners = {entry["name"]: entry["active_state"]["listener"]
                 for entry in sections[DUMP + "ListenersConfigDump"].get("dynamic_listeners", []) if "active_state" in entry}
    clusters = {entry["cluster"]["name"]: entry["cluster"]
                for entry in sections[DUMP + "ClustersConfigDump"].get("dynamic_active_clusters", [])}
    routes = {entry["route_config"]["name"]: entry["route_config"]
              for entry in sections.get(DUMP + "RoutesConfigDump", {}).get("dynamic_route_configs", [])}
    return listeners, clusters, routes


def write_certificates(directory):
    """A throw-away CA and a certificate it signed (any certificate will do: SDS only carries them)."""
    root_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    root = ca_certificate(organization("check root"), root_key, organization("check root"), root_key)
    leaf = ca_certificate(organization("check workload"), key, root.subject, root_key)
    paths = {name: os.path.join(directory, name) for name in ("chain.pem", "key.pem", "root.pem")}
    texts = {"chain.pem": pem(leaf) + pem(root), "root.pem": pem(root),
             "key.pem": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()).decode()}
    for name, text in texts.items():
        with open(paths[name], "w") as file:
            file.write(text)
    return paths, texts


class Stream:
    """A client stream: requests go in through a queue, responses come out through another."""

    def __init__(self, method, first_node=True):
        self.requests, self.responses = queue.Queue(), queue.Queue()
        self.node_sent = not first_node
        self.call = method(iter(self.requests.get, None))
        self.reader = threading.Thread(target=self.read, daemon=True)
        self.reader.start()

    def read(self):
        try:
            for response in self.call:
                self.responses.put(response)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                self.responses.put(error)

    def send(self, type_url, names=(), version="", nonce="", error=None):
        request = discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=list(names),
                                                 version_info=version, response_nonce=nonce)
        if not self.node_sent:
            request.node.CopyFrom(NODE)
            self.node_sent = True
        if error is not None:
            request.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        self.requests.put(request)

    def receive(self, type_url, timeout=10):
        try:
            response = self.responses.get(timeout=timeout)
        except queue.Empty:
            raise Failed(f"no response for {type_url} within {timeout}s")
        check(not isinstance(response, Exception), f"the stream failed: {response}")
        check(response.type_url == type_url, f"expected {type_url}, got {response.type_url}")
        check(response.version_info == "1", f"{type_url}: version {response.version_info!r}, not '1'")
        return response

    def subscribe(self, type_url, names=()):
        """Requests, receives, ACKs; returns the response's messages."""
        self.send(type_url, names)
        response = self.receive(type_url)
        self.send(type_url, names, version=response.version_info, nonce=response.nonce)
        return response, [envoy_types.message_from_any(resource) for resource in response.resources]

    def expect_silence(self, what, seconds=0.5):
        try:
            response = self.responses.get(timeout=seconds)
        except queue.Empty:
            return
        raise Failed(f"{what} was answered: {getattr(response, 'type_url', response)}")

    def close(self):
        self.requests.put(None)
        self.call.cancel()


def same_as_dump(kind, received, expected):
    """Every received message reads back to exactly the dump's JSON for it."""
    names = [message.name for message in received]
    check(len(names) == len(set(names)), f"{kind}: a name came twice")
    check(set(names) == set(expected), f"{kind}: got {sorted(set(names) ^ set(expected))} unlike the dump")
    for message in received:
        back = {"@type": expected[message.name]["@type"], **json_format.MessageToDict(message, preserving_proto_field_name=True)}
        check(back == expected[message.name], f"{kind} {message.name}: differs from the dump after the round trip")


def route_names(listeners):
    names = []
    for listener in listeners:
        chains = list(listener.filter_chains) + ([listener.default_filter_chain] if listener.HasField("default_filter_chain") else [])
        for chain in chains:
            for network_filter in chain.filters:
                if network_filter.typed_config.type_url == HCM:
                    manager = http_connection_manager_pb2.HttpConnectionManager()
                    network_filter.typed_config.Unpack(manager)
                    if manager.HasField("rds"):
                        names.append(manager.rds.route_config_name)
    return list(dict.fromkeys(names))


def check_dump(path, work):
    listeners_json, clusters_json, routes_json = expected_resources(path)
    known = KNOWN_COUNTS.get(os.path.basename(path))
    if known is not None:
        check((len(listeners_json), len(clusters_json), len(routes_json)) == known,
              f"the dump itself has {len(listeners_json)}/{len(clusters_json)}/{len(routes_json)}, not {known}")
    certificates, certificate_texts = write_certificates(work)
    log = os.path.join(work, "requests.jsonl")
    port = free_port()
    # An EDS cluster mapped by name, the rest to the default endpoint. No packet goes to either address.
    eds_services = [cluster.get("eds_cluster_config", {}).get("service_name") or name
                    for name, cluster in clusters_json.items() if cluster.get("type") == "EDS"]
    mapped = eds_services[0] if eds_services else "none"
    command = [sys.executable, os.path.join(PEERS, "dump_ads_server.py"), "--listen", f"127.0.0.1:{port}",
               "--dump", path, "--log", log, "--endpoint", f"{mapped}=127.0.0.2:8080", "--endpoint", f"{mapped}=127.0.0.3:8080",
               "--default-endpoint", "127.0.0.1:9", "--tls-mode", "istio", "--cert-chain", certificates["chain.pem"],
               "--private-key", certificates["key.pem"], "--root-cert", certificates["root.pem"]]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=open(os.path.join(work, "server.err"), "w"), text=True)
    try:
        check(server.stdout.readline().strip() == "READY", "the server did not print READY")
        channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", 64 << 20)])
        stream = Stream(ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources)

        _, clusters = stream.subscribe(CLUSTER)
        same_as_dump("cluster", clusters, clusters_json)
        stream.expect_silence("the CDS ACK")

        eds_names = [c.eds_cluster_config.service_name or c.name for c in clusters if c.type == c.EDS]
        half = eds_names[:len(eds_names) // 2]
        _, first = stream.subscribe(ENDPOINT, half)
        check([a.cluster_name for a in first] == half, f"EDS answered {len(first)} for {len(half)} names")
        _, assignments = stream.subscribe(ENDPOINT, eds_names)
        check(sorted(a.cluster_name for a in assignments) == sorted(eds_names), "EDS did not answer the grown set")
        for assignment in assignments:
            addresses = [(e.endpoint.address.socket_address.address, e.endpoint.address.socket_address.port_value)
                         for locality in assignment.endpoints for e in locality.lb_endpoints]
            wanted = [("127.0.0.2", 8080), ("127.0.0.3", 8080)] if assignment.cluster_name == mapped else [("127.0.0.1", 9)]
            check(addresses == wanted, f"EDS {assignment.cluster_name}: {addresses}, not {wanted}")
            for locality in assignment.endpoints:
                for endpoint in locality.lb_endpoints:
                    tls_mode = endpoint.metadata.filter_metadata["envoy.transport_socket_match"].fields["tlsMode"].string_value
                    check(tls_mode == "istio", f"EDS {assignment.cluster_name}: tlsMode {tls_mode!r}")
        stream.expect_silence("the EDS ACK")

        _, listeners = stream.subscribe(LISTENER)
        same_as_dump("listener", listeners, listeners_json)
        names = route_names(listeners)
        check(set(names) <= set(routes_json), f"listeners name route configurations the dump lacks: {set(names) - set(routes_json)}")
        routes_response, routes = stream.subscribe(ROUTE, names)
        same_as_dump("route configuration", routes, {name: routes_json[name] for name in names})
        stream.send(ROUTE, names, version="1", nonce=routes_response.nonce, error="check: a NACK")
        stream.expect_silence("the RDS NACK")

        _, secrets = stream.subscribe(SECRET, ["default", "ROOTCA"])
        by_name = {secret.name: secret for secret in secrets}
        check(by_name["default"].tls_certificate.certificate_chain.inline_bytes.decode() == certificate_texts["chain.pem"], "SDS default: chain")
        check(by_name["ROOTCA"].validation_context.trusted_ca.inline_bytes.decode() == certificate_texts["root.pem"], "SDS ROOTCA")
        stream.expect_silence("the SDS ACK")
        stream.close()

        secret_stream = Stream(sds_pb2_grpc.SecretDiscoveryServiceStub(channel).StreamSecrets)
        _, secrets = secret_stream.subscribe(SECRET, ["ROOTCA"])
        check([secret.name for secret in secrets] == ["ROOTCA"], "StreamSecrets did not answer ROOTCA")
        secret_stream.expect_silence("the StreamSecrets ACK")
        secret_stream.close()
        channel.close()

        server.send_signal(signal.SIGTERM)
        check(server.wait(timeout=10) == 0, f"the server exited with {server.returncode} on SIGTERM")
        with open(log) as file:
            logged = [json.loads(line) for line in file]
        nacks = [entry for entry in logged if entry["error_detail"]]
        check(len(logged) == 15, f"{len(logged)} requests logged, 15 sent")
        check(len(nacks) == 1 and nacks[0]["type_url"] == ROUTE and nacks[0]["error_detail"] == "check: a NACK", f"NACKs logged: {nacks}")
        check(logged[0]["node"] == NODE.id, "the first request's node id is not logged")
        print(f"{os.path.basename(path)}: {len(listeners)} listeners, {len(clusters)} clusters, {len(routes)} route "
              f"configurations (the dump's, exactly); {len(assignments)} EDS assignments ({len(half)} then all); "
              f"2 secrets over ADS, 1 over StreamSecrets; {len(logged)} requests logged, 1 NACK; stopped on SIGTERM")
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def main():
    dumps = sys.argv[1:] or DEFAULT_DUMPS
    failures = 0
    for path in dumps:
        with tempfile.TemporaryDirectory(prefix="check-dump-ads-") as work:
            try:
                check_dump(path, work)
            except Failed as failure:
                failures += 1
                print(f"{os.path.basename(path)}: FAILED: {failure}")
                with open(os.path.join(work, "server.err")) as file:
                    sys.stdout.write(file.read()[-2000:])
    print(f"{len(dumps) - failures} passed, {failures} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
