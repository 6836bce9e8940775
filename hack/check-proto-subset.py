#!/usr/bin/env python3
"""Checks every .proto in proto/ against descriptors we did not write, so the wire format is the other side's:
- Envoy's API (and google.rpc, and the udpa/xds packages Envoy's API uses) against PyPI's xds-protos, Envoy's own
  generated descriptors;
- Istio's API (istio.*) against the transcriptions of Istio's published files that the interoperability
  peers are compiled from (Tests/EndToEndTests/Peers/istio-api/; no package on PyPI carries them).
Every message, field, enum value and service method in our subset must exist there with the same number,
type, label and message types. A file whose package neither reference knows is a failure: nothing in
proto/ goes unchecked."""
import subprocess, sys, tempfile, pathlib
from google.protobuf import descriptor_pb2, descriptor_pool
import envoy.service.discovery.v3.ads_pb2  # noqa: F401  (loads the discovery service and its imports)
import envoy.config.listener.v3.listener_pb2, envoy.config.cluster.v3.cluster_pb2  # noqa: F401,E401
import envoy.config.endpoint.v3.endpoint_pb2  # noqa: F401
import envoy.extensions.filters.network.tcp_proxy.v3.tcp_proxy_pb2  # noqa: F401
import envoy.extensions.filters.network.sni_cluster.v3.sni_cluster_pb2  # noqa: F401
import envoy.extensions.filters.network.ext_authz.v3.ext_authz_pb2  # noqa: F401
import envoy.extensions.transport_sockets.tls.v3.tls_pb2  # noqa: F401
import envoy.extensions.filters.listener.tls_inspector.v3.tls_inspector_pb2  # noqa: F401
import envoy.service.secret.v3.sds_pb2  # noqa: F401
import envoy.config.bootstrap.v3.bootstrap_pb2  # noqa: F401
import envoy.config.route.v3.route_pb2  # noqa: F401  (with route_components, regex and range)
import envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2  # noqa: F401  (with protocol, accesslog)
import envoy.extensions.upstreams.http.v3.http_protocol_options_pb2  # noqa: F401
import envoy.extensions.filters.http.router.v3.router_pb2  # noqa: F401
import envoy.extensions.filters.http.fault.v3.fault_pb2  # noqa: F401  (with common fault, percent)
import envoy.extensions.filters.http.cors.v3.cors_pb2  # noqa: F401
import envoy.extensions.filters.listener.http_inspector.v3.http_inspector_pb2  # noqa: F401
import envoy.extensions.filters.listener.original_dst.v3.original_dst_pb2  # noqa: F401
import envoy.extensions.access_loggers.file.v3.file_pb2  # noqa: F401  (with substitution_format_string, extension)
import envoy.extensions.access_loggers.stream.v3.stream_pb2  # noqa: F401
import udpa.type.v1.typed_struct_pb2, xds.type.v3.typed_struct_pb2  # noqa: F401,E401  (xds-protos carries udpa and xds too)
import envoy.extensions.filters.http.rbac.v3.rbac_pb2, envoy.extensions.filters.network.rbac.v3.rbac_pb2  # noqa: F401,E401  (with config.rbac and the metadata, path and filter-state matchers)
import envoy.extensions.filters.http.jwt_authn.v3.config_pb2  # noqa: F401  (with http_uri)
import envoy.extensions.filters.http.ext_authz.v3.ext_authz_pb2, envoy.service.auth.v3.external_auth_pb2  # noqa: F401,E401  (with grpc_service, attribute_context, http_status)
import envoy.extensions.network.dns_resolver.cares.v3.cares_dns_resolver_pb2  # noqa: F401  (a DNS cluster's typed_dns_resolver_config)
import envoy.extensions.retry.priority.previous_priorities.v3.previous_priorities_config_pb2  # noqa: F401  (a retry policy's retry_priority)

repository = pathlib.Path(__file__).resolve().parent.parent
ours_root = repository / "proto"
istio_root = repository / "Tests" / "EndToEndTests" / "Peers" / "istio-api"


def compile_set(root):
    """The FileDescriptorSet of every .proto below root, with its imports."""
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*.proto"))
    with tempfile.NamedTemporaryFile(suffix=".pb") as out:
        subprocess.run(["protoc", f"-I{root}", "--include_imports", f"--descriptor_set_out={out.name}", *files], check=True)
        return descriptor_pb2.FileDescriptorSet.FromString(pathlib.Path(out.name).read_bytes()), set(files)


ours, our_files = compile_set(ours_root)
envoy = descriptor_pool.Default()
istio = descriptor_pool.DescriptorPool()
istio_set, _ = compile_set(istio_root)
for file in istio_set.file:
    istio.Add(file)

problems, checked = [], 0


def repeated(field):
    """Newer protobuf runtimes have is_repeated; older ones only label."""
    return field.is_repeated if hasattr(field, "is_repeated") else field.label == field.LABEL_REPEATED


def reference_of(find, name, kind, owner):
    """The reference's descriptor of `name` (a message, enum or service), or None with the problem noted."""
    try:
        return find(name)
    except KeyError:
        problems.append(f"{name}: no such {kind} in {owner}'s API")
        return None


def check_message(message, prefix, reference_pool, owner):
    global checked
    name = f"{prefix}.{message.name}"
    reference = reference_of(reference_pool.FindMessageTypeByName, name, "message", owner)
    if reference is None:
        return
    for field in message.field:
        real = reference.fields_by_name.get(field.name)
        checked += 1
        if real is None:
            problems.append(f"{name}.{field.name}: no such field in {owner}'s API"); continue
        ours_shape = (field.number, field.type, field.label == field.LABEL_REPEATED, field.type_name.lstrip("."))
        real_type = real.message_type or real.enum_type
        real_shape = (real.number, real.type, repeated(real), real_type.full_name if real_type else "")
        if ours_shape != real_shape:
            problems.append(f"{name}.{field.name}: ours #{ours_shape[0]} type {ours_shape[1]} {ours_shape[3]} repeated {ours_shape[2]}, "
                            f"{owner}'s #{real_shape[0]} type {real_shape[1]} {real_shape[3]} repeated {real_shape[2]}")
    for nested in message.nested_type:
        if not nested.options.map_entry:
            check_message(nested, name, reference_pool, owner)
    for enum in message.enum_type:
        check_enum(enum, name, reference_pool, owner)


def check_enum(enum, prefix, reference_pool, owner):
    global checked
    name = f"{prefix}.{enum.name}"
    reference = reference_of(reference_pool.FindEnumTypeByName, name, "enum", owner)
    if reference is None:
        return
    for value in enum.value:
        checked += 1
        real = reference.values_by_name.get(value.name)
        if real is None or real.number != value.number:
            problems.append(f"{name}.{value.name}: not {owner}'s ({real.number if real else 'missing'})")


def check_service(service, prefix, reference_pool, owner):
    global checked
    name = f"{prefix}.{service.name}"
    reference = reference_of(reference_pool.FindServiceByName, name, "service", owner)
    if reference is None:
        return
    for method in service.method:
        checked += 1
        real = reference.methods_by_name.get(method.name)
        if real is None:
            problems.append(f"{name}/{method.name}: no such method in {owner}'s API"); continue
        real_client_streaming = getattr(real, "client_streaming", method.client_streaming)
        real_server_streaming = getattr(real, "server_streaming", method.server_streaming)
        ours_shape = (method.input_type.lstrip("."), method.output_type.lstrip("."), method.client_streaming, method.server_streaming)
        real_shape = (real.input_type.full_name, real.output_type.full_name, real_client_streaming, real_server_streaming)
        if ours_shape != real_shape:
            problems.append(f"{name}/{method.name}: ours {ours_shape}, {owner}'s {real_shape}")


for file in ours.file:
    # Imports from protoc's own include directory (google/protobuf/*) are not ours to check.
    if file.name not in our_files:
        continue
    if file.package.startswith("istio."):
        reference_pool, owner = istio, "Istio"
    elif file.package.startswith(("envoy.", "google.rpc", "udpa.", "xds.")):
        reference_pool, owner = envoy, "Envoy"
    else:
        problems.append(f"{file.name}: package {file.package} has no independent reference to be checked against"); continue
    for message in file.message_type:
        check_message(message, file.package, reference_pool, owner)
    for enum in file.enum_type:
        check_enum(enum, file.package, reference_pool, owner)
    for service in file.service:
        check_service(service, file.package, reference_pool, owner)

print("\n".join(problems) or f"proto/: {checked} fields, enum values and methods match Envoy's descriptors and Istio's published API")
sys.exit(1 if problems else 0)
