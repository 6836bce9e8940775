"""An ADS server that serves what istiod served: the configuration in an Envoy /config_dump, read back into
Envoy's messages by protobuf's json_format with descriptors we did not write (PyPI's xds-protos, and Istio's
extension types from the transcriptions of Istio's published files; see envoy_types.py), and served by
grpcio's AggregatedDiscoveryService, state of the world. Tests run it inside a network namespace they made.

usage: dump_ads_server.py --listen IP:PORT --dump FILE --log FILE
           [--endpoint NAME=IP:PORT ...] [--default-endpoint IP:PORT] [--tls-mode istio|disabled]
           [--cert-chain PEM --private-key PEM --root-cert PEM]
           [--include-static] [--include-failed] [--dump-endpoints]

What it serves, each type at version "1":
  CDS  every cluster of the dump's ClustersConfigDump (dynamic_active_clusters; with --include-static, the
       static_clusters of the bootstrap too);
  LDS  every listener of its ListenersConfigDump (dynamic_listeners' active_state, else warming_state;
       with --include-failed, the failed_configuration of a listener Envoy rejected; with --include-static,
       the static_listeners);
  RDS  the route configurations named in the request, from its RoutesConfigDump (dynamic_route_configs);
  EDS  for each name requested (an EDS cluster's service_name, or its name), a ClusterLoadAssignment whose
       endpoints are, first found: the --endpoint entries whose NAME is that service name, the cluster's
       name, or the service's host (the last field of outbound|PORT|SUBSET|HOST); --default-endpoint;
       with --dump-endpoints, the dump's EndpointsConfigDump (addresses of the pods of the cluster the dump
       came from: use only where those addresses are inside namespaces the test made); else none. Each
       endpoint is HEALTHY with weight 1, and with --tls-mode istio carries the metadata istiod gives
       sidecar-injected pods, envoy.transport_socket_match {tlsMode: istio};
  SDS  with --cert-chain, --private-key and --root-cert, the secrets `default` (tls_certificate) and
       `ROOTCA` (validation_context.trusted_ca), over ADS and over SecretDiscoveryService/StreamSecrets.
The dump's SecretsConfigDump (redacted by Envoy) and its bootstrap are not served.

A stream answers a request when it asks for a set of resources other than the one last sent for its type
(the first request, or EDS/RDS/SDS names added or removed); an ACK or NACK of what was sent gets no answer.
Each DiscoveryRequest is logged to --log as a JSON line {"stream", "node" (the node id; empty after a
stream's first request), "type_url", "version_info", "response_nonce", "resource_names", "error_detail" (its
message, or null)}; each response sent is written to stderr. READY is printed on stdout once the port
listens; SIGTERM and SIGINT stop it.

Extension types in the dump that neither xds-protos nor Istio's transcriptions know are served with their
type URL and an empty value (envoy_types.py says why); the startup summary on stderr lists them.
"""
import argparse
import itertools
import json
import signal
import sys
import threading
from concurrent import futures

import grpc
from envoy.config.core.v3 import address_pb2, base_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc
from google.protobuf import any_pb2, struct_pb2, wrappers_pb2

import envoy_types

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
WILDCARD_TYPES = (LISTENER, CLUSTER)
DUMP = "type.googleapis.com/envoy.admin.v3."
VERSION = "1"


def parse_address(text):
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected IP:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def parse_endpoint(text):
    name, separator, address = text.rpartition("=")
    if not separator or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=IP:PORT, got {text!r}")
    return name, parse_address(address)


class DumpedConfiguration:
    """The dump's resources as Envoy's messages, by name, in the dump's order."""

    def __init__(self, path, include_static, include_failed):
        with open(path) as file:
            dump = json.load(file)
        self.listeners, self.clusters, self.routes, self.endpoints = {}, {}, {}, {}
        self.skipped = []
        sections = {config.get("@type"): config for config in dump.get("configs", [])}

        listeners = sections.get(DUMP + "ListenersConfigDump", {})
        for entry in listeners.get("dynamic_listeners", []):
            state = entry.get("active_state") or entry.get("warming_state")
            if state is not None:
                self.add(self.listeners, state["listener"])
            elif include_failed and "error_state" in entry:
                self.add(self.listeners, entry["error_state"]["failed_configuration"])
            else:
                name = entry.get("name") or entry.get("error_state", {}).get("failed_configuration", {}).get("name")
                self.skipped.append(f"listener {name}: no active or warming state ({', '.join(entry)})")
        if include_static:
            for entry in listeners.get("static_listeners", []):
                self.add(self.listeners, entry["listener"])

        clusters = sections.get(DUMP + "ClustersConfigDump", {})
        for entry in clusters.get("dynamic_active_clusters", []) + clusters.get("dynamic_warming_clusters", []):
            self.add(self.clusters, entry["cluster"])
        if include_static:
            for entry in clusters.get("static_clusters", []):
                self.add(self.clusters, entry["cluster"])

        for entry in sections.get(DUMP + "RoutesConfigDump", {}).get("dynamic_route_configs", []):
            self.add(self.routes, entry["route_config"])

        for entry in sections.get(DUMP + "EndpointsConfigDump", {}).get("dynamic_endpoint_configs", []):
            assignment = envoy_types.message_from_json(entry["endpoint_config"])
            self.endpoints[assignment.cluster_name] = assignment

        # EDS resource name (the cluster's service_name, else its name) -> cluster name.
        self.eds_clusters = {}
        for cluster in self.clusters.values():
            if cluster.HasField("type") and cluster.type == cluster.EDS:
                self.eds_clusters[cluster.eds_cluster_config.service_name or cluster.name] = cluster.name

    @staticmethod
    def add(table, value):
        message = envoy_types.message_from_json(value)
        table[message.name] = message


class Resources:
    """What each type's response holds for a request's resource names."""

    def __init__(self, configuration, arguments):
        self.configuration = configuration
        self.arguments = arguments
        self.endpoint_map = {}
        for name, address in arguments.endpoint or []:
            self.endpoint_map.setdefault(name, []).append(address)
        self.secrets = self.load_secrets(arguments) if arguments.cert_chain else {}

    @staticmethod
    def load_secrets(arguments):
        def read(path):
            with open(path, "rb") as file:
                return file.read()
        default = secret_pb2.Secret(name="default", tls_certificate=common_pb2.TlsCertificate(
            certificate_chain=base_pb2.DataSource(inline_bytes=read(arguments.cert_chain)),
            private_key=base_pb2.DataSource(inline_bytes=read(arguments.private_key))))
        root = secret_pb2.Secret(name="ROOTCA", validation_context=common_pb2.CertificateValidationContext(
            trusted_ca=base_pb2.DataSource(inline_bytes=read(arguments.root_cert))))
        return {"default": default, "ROOTCA": root}

    def known_type(self, type_url):
        return type_url in (LISTENER, CLUSTER, ROUTE, ENDPOINT) or (type_url == SECRET and bool(self.secrets))

    def select(self, type_url, names):
        """The messages for a request; names is None for a wildcard subscription."""
        if type_url == LISTENER:
            table = self.configuration.listeners
        elif type_url == CLUSTER:
            table = self.configuration.clusters
        elif type_url == ROUTE:
            table = self.configuration.routes
        elif type_url == SECRET:
            table = self.secrets
        elif type_url == ENDPOINT:
            return [self.assignment(name) for name in names or self.configuration.eds_clusters]
        else:
            return []
        if names is None:
            return list(table.values())
        return [table[name] for name in names if name in table]

    def assignment(self, name):
        cluster = self.configuration.eds_clusters.get(name, name)
        host = cluster.split("|")[-1] if cluster.count("|") == 3 else None
        addresses = (self.endpoint_map.get(name) or self.endpoint_map.get(cluster)
                     or (self.endpoint_map.get(host) if host else None)
                     or ([self.arguments.default_endpoint] if self.arguments.default_endpoint else None))
        if addresses is None and self.arguments.dump_endpoints and name in self.configuration.endpoints:
            return self.configuration.endpoints[name]
        metadata = None
        if self.arguments.tls_mode == "istio":
            match = struct_pb2.Struct()
            match.update({"tlsMode": "istio"})
            metadata = base_pb2.Metadata(filter_metadata={"envoy.transport_socket_match": match})
        endpoints = [endpoint_components_pb2.LbEndpoint(
            endpoint=endpoint_components_pb2.Endpoint(address=address_pb2.Address(
                socket_address=address_pb2.SocketAddress(address=ip, port_value=port))),
            health_status=health_check_pb2.HEALTHY, metadata=metadata,
            load_balancing_weight=wrappers_pb2.UInt32Value(value=1)) for ip, port in addresses or []]
        localities = [endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=endpoints)] if endpoints else []
        return endpoint_pb2.ClusterLoadAssignment(cluster_name=name, endpoints=localities)


class Log:
    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()

    def request(self, stream, request):
        entry = {"stream": stream, "node": request.node.id, "type_url": request.type_url,
                 "version_info": request.version_info, "response_nonce": request.response_nonce,
                 "resource_names": list(request.resource_names),
                 "error_detail": request.error_detail.message if request.HasField("error_detail") else None}
        with self.lock, open(self.path, "a") as file:
            file.write(json.dumps(entry) + "\n")


def packed(message):
    value = any_pb2.Any()
    value.Pack(message)
    return value


class Streams:
    """One state-of-the-world conversation per stream, ADS or SDS alike."""

    def __init__(self, resources, log):
        self.resources = resources
        self.log = log
        self.numbers = itertools.count(1)

    def serve(self, requests, fixed_type=None):
        stream, nonces = next(self.numbers), itertools.count(1)
        last_sent = {}  # type URL -> the names of its last response (None: wildcard)
        for request in requests:
            self.log.request(stream, request)
            type_url = request.type_url or fixed_type
            names = list(dict.fromkeys(request.resource_names))
            if type_url in WILDCARD_TYPES and (not names or "*" in names):
                names = None
            subscription = None if names is None else frozenset(names)
            if type_url in last_sent and last_sent[type_url] == subscription:
                continue  # an ACK or a NACK of what was sent: nothing new to say
            if not self.resources.known_type(type_url):
                print(f"stream {stream}: nothing to serve for {type_url}", file=sys.stderr, flush=True)
                continue
            last_sent[type_url] = subscription
            messages = self.resources.select(type_url, names)
            nonce = str(next(nonces))
            print(f"stream {stream}: {type_url.rsplit('.', 1)[1]} version {VERSION} nonce {nonce}: "
                  f"{len(messages)} resources", file=sys.stderr, flush=True)
            yield discovery_pb2.DiscoveryResponse(version_info=VERSION, type_url=type_url, nonce=nonce,
                                                  resources=[packed(message) for message in messages])


class AggregatedDiscovery(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def __init__(self, streams):
        self.streams = streams

    def StreamAggregatedResources(self, requests, context):
        return self.streams.serve(requests)


class SecretDiscovery(sds_pb2_grpc.SecretDiscoveryServiceServicer):
    def __init__(self, streams):
        self.streams = streams

    def StreamSecrets(self, requests, context):
        return self.streams.serve(requests, fixed_type=SECRET)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", required=True, type=parse_address)
    parser.add_argument("--dump", required=True, help="an Envoy /config_dump JSON file")
    parser.add_argument("--log", required=True, help="DiscoveryRequests are appended here, one JSON line each")
    parser.add_argument("--endpoint", action="append", type=parse_endpoint, metavar="NAME=IP:PORT")
    parser.add_argument("--default-endpoint", type=parse_address, metavar="IP:PORT")
    parser.add_argument("--tls-mode", choices=["istio", "disabled"], default="disabled")
    parser.add_argument("--cert-chain")
    parser.add_argument("--private-key")
    parser.add_argument("--root-cert")
    parser.add_argument("--include-static", action="store_true", help="also the bootstrap's static listeners and clusters")
    parser.add_argument("--include-failed", action="store_true", help="also listeners Envoy rejected")
    parser.add_argument("--dump-endpoints", action="store_true", help="EDS falls back to the dump's endpoints")
    arguments = parser.parse_args()
    certificates = [arguments.cert_chain, arguments.private_key, arguments.root_cert]
    if any(certificates) and not all(certificates):
        parser.error("--cert-chain, --private-key and --root-cert go together")

    configuration = DumpedConfiguration(arguments.dump, arguments.include_static, arguments.include_failed)
    streams = Streams(Resources(configuration, arguments), Log(arguments.log))
    print(f"dump_ads_server.py: {len(configuration.listeners)} listeners, {len(configuration.clusters)} clusters "
          f"({len(configuration.eds_clusters)} EDS), {len(configuration.routes)} route configurations, "
          f"{len(configuration.endpoints)} endpoint assignments in the dump", file=sys.stderr)
    for note in configuration.skipped:
        print(f"dump_ads_server.py: skipped {note}", file=sys.stderr)
    if envoy_types.opaque:
        print(f"dump_ads_server.py: served with empty values (unknown types): {envoy_types.opaque}", file=sys.stderr)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(AggregatedDiscovery(streams), server)
    if arguments.cert_chain:
        sds_pb2_grpc.add_SecretDiscoveryServiceServicer_to_server(SecretDiscovery(streams), server)
    host, port = arguments.listen
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as error:
        sys.exit(f"dump_ads_server.py: cannot listen on {address}: {error}")
    if bound == 0:
        sys.exit(f"dump_ads_server.py: cannot listen on {address}")
    stop = threading.Event()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signal_number, lambda *_: stop.set())
    server.start()
    print("READY", flush=True)
    stop.wait()
    server.stop(grace=0.5).wait()


if __name__ == "__main__":
    main()
