"""An ADS server we did not write the protocol code of: grpcio with Envoy's own generated protos
(PyPI's xds-protos). It serves one STATIC cluster and one listener, then, once the listener is
ACKed, a second listener version that uses a filter Capstan does not have, which the proxy must
NACK. Every request it receives is logged as a JSON line.

usage: ads_server.py HOST:PORT LOG_PATH SERVICE_VIP SERVICE_PORT ENDPOINT_IP ENDPOINT_PORT
"""
import json
import sys
import threading
from concurrent import futures

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2
from envoy.config.endpoint.v3 import endpoint_pb2, endpoint_components_pb2
from envoy.config.listener.v3 import listener_pb2, listener_components_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"

address, log_path, vip, service_port, endpoint_ip, endpoint_port = sys.argv[1:7]
log_lock = threading.Lock()


def log(entry):
    with log_lock, open(log_path, "a") as f:
        f.write(json.dumps(entry) + "\n")


def packed(message):
    value = any_pb2.Any()
    value.Pack(message)
    return value


def socket_address(ip, port):
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=ip, port_value=int(port)))


def clusters():
    endpoint = endpoint_components_pb2.LbEndpoint(endpoint=endpoint_components_pb2.Endpoint(address=socket_address(endpoint_ip, endpoint_port)))
    service = cluster_pb2.Cluster(
        name="python-service", type=cluster_pb2.Cluster.STATIC, connect_timeout=duration_pb2.Duration(seconds=1),
        load_assignment=endpoint_pb2.ClusterLoadAssignment(
            cluster_name="python-service", endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[endpoint])]))
    passthrough = cluster_pb2.Cluster(name="PassthroughCluster", type=cluster_pb2.Cluster.ORIGINAL_DST,
                                      lb_policy=cluster_pb2.Cluster.CLUSTER_PROVIDED, connect_timeout=duration_pb2.Duration(seconds=1))
    return [service, passthrough]


def tcp_proxy_chain(cluster, port=None, prefix=None):
    match = listener_components_pb2.FilterChainMatch()
    if port is not None:
        match.destination_port.value = int(port)
    if prefix is not None:
        match.prefix_ranges.add(address_prefix=prefix, prefix_len=wrappers_pb2.UInt32Value(value=32))
    proxy = tcp_proxy_pb2.TcpProxy(stat_prefix=cluster, cluster=cluster)
    return listener_components_pb2.FilterChain(
        filter_chain_match=match,
        filters=[listener_components_pb2.Filter(name="envoy.filters.network.tcp_proxy", typed_config=packed(proxy))])


def listeners(valid):
    chain = tcp_proxy_chain("python-service", service_port, vip)
    if not valid:
        manager = http_connection_manager_pb2.HttpConnectionManager(stat_prefix="http")
        chain.filters[0].CopyFrom(listener_components_pb2.Filter(
            name="envoy.filters.network.http_connection_manager", typed_config=packed(manager)))
    listener = listener_pb2.Listener(
        name="virtualOutbound", address=socket_address("0.0.0.0", 15001), use_original_dst=wrappers_pb2.BoolValue(value=True),
        filter_chains=[chain], default_filter_chain=tcp_proxy_chain("PassthroughCluster"))
    return [listener]


class AggregatedDiscovery(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def StreamAggregatedResources(self, requests, context):
        nonce = 0
        sent = {}
        for request in requests:
            log({"type_url": request.type_url, "version_info": request.version_info, "response_nonce": request.response_nonce,
                 "error": request.error_detail.message, "node": request.node.id, "resource_names": list(request.resource_names)})
            responses = []
            if request.type_url == CLUSTER and CLUSTER not in sent:
                responses.append((CLUSTER, "1", clusters()))
            elif request.type_url == LISTENER and LISTENER not in sent:
                responses.append((LISTENER, "1", listeners(valid=True)))
            elif (request.type_url == LISTENER and request.response_nonce == sent.get(LISTENER)
                  and request.version_info == "1" and not request.error_detail.message):
                responses.append((LISTENER, "2", listeners(valid=False)))
            for type_url, version, resources in responses:
                nonce += 1
                sent[type_url] = str(nonce)
                yield discovery_pb2.DiscoveryResponse(version_info=version, type_url=type_url, nonce=str(nonce),
                                                      resources=[packed(r) for r in resources])


server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(AggregatedDiscovery(), server)
server.add_insecure_port(address)
server.start()
print("serving", flush=True)
server.wait_for_termination()
