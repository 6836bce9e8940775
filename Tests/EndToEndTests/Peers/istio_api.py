"""Istio's API for the Python peers, compiled at start by grpcio-tools from the transcriptions of Istio's
published .proto files in istio-api/ (never from the repository's proto/, so a peer cannot agree with a
mistake there): the CA API, and the extension configurations istiod puts in Envoy's Any fields."""
import importlib.util
import os
import sys

from peer_protos import PEERS, compile_protos

# Istio's extension configurations that istiod writes into Envoy's typed_config fields and that PyPI's
# xds-protos does not carry (they are Istio's, not Envoy's).
EXTENSION_PROTOS = (
    "envoy/config/filter/http/alpn/v2alpha1/config.proto",  # istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig
    "envoy/config/filter/network/metadata_exchange/metadata_exchange.proto",  # envoy.tcp.metadataexchange.config.MetadataExchange
    "envoy/extensions/stats/config.proto",  # stats.PluginConfig
)


def load_ca_api():
    """Returns (ca_pb2, ca_pb2_grpc) for package istio.v1.auth."""
    generated = compile_protos(os.path.join(PEERS, "istio-api"), "security/v1alpha1/ca.proto")
    sys.path.insert(0, generated)
    from security.v1alpha1 import ca_pb2, ca_pb2_grpc
    return ca_pb2, ca_pb2_grpc


def load_extension_types():
    """Registers Istio's extension configuration messages in protobuf's default descriptor pool (which is
    what json_format and Any use) and returns their modules. They are loaded by file path under names of
    their own: their Python package (envoy.*) would collide with xds-protos' envoy package."""
    generated = compile_protos(os.path.join(PEERS, "istio-api"), *EXTENSION_PROTOS, grpc=False)
    modules = []
    for index, proto in enumerate(EXTENSION_PROTOS):
        path = os.path.join(generated, proto[:-len(".proto")] + "_pb2.py")
        spec = importlib.util.spec_from_file_location(f"istio_extension_{index}_pb2", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        modules.append(module)
    return modules
