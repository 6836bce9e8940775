#!/usr/bin/env python3
"""Checks proto/ against Envoy's own descriptors (PyPI's xds-protos): every message, field and enum value
in our subset must exist there with the same number, type and label, so the wire format is Envoy's."""
import subprocess, sys, tempfile, pathlib
from google.protobuf import descriptor_pb2, descriptor_pool
import envoy.service.discovery.v3.ads_pb2  # noqa: F401  (loads the discovery service and its imports)
import envoy.config.listener.v3.listener_pb2, envoy.config.cluster.v3.cluster_pb2  # noqa: F401,E401
import envoy.config.endpoint.v3.endpoint_pb2  # noqa: F401
import envoy.extensions.filters.network.tcp_proxy.v3.tcp_proxy_pb2  # noqa: F401
import envoy.extensions.transport_sockets.tls.v3.tls_pb2  # noqa: F401
import envoy.extensions.filters.listener.tls_inspector.v3.tls_inspector_pb2  # noqa: F401
import envoy.service.secret.v3.sds_pb2  # noqa: F401

root = pathlib.Path(__file__).resolve().parent.parent / "proto"
files = sorted(str(p.relative_to(root)) for p in root.rglob("*.proto"))
with tempfile.NamedTemporaryFile(suffix=".pb") as out:
    subprocess.run(["protoc", f"-I{root}", "--include_imports", f"--descriptor_set_out={out.name}", *files], check=True)
    ours = descriptor_pb2.FileDescriptorSet.FromString(pathlib.Path(out.name).read_bytes())

pool = descriptor_pool.Default()
problems, checked = [], 0

def repeated(field):
    """Newer protobuf runtimes have is_repeated; older ones only label."""
    return field.is_repeated if hasattr(field, "is_repeated") else field.label == field.LABEL_REPEATED

def check_message(message, prefix):
    global checked
    name = f"{prefix}.{message.name}"
    try:
        reference = pool.FindMessageTypeByName(name)
    except KeyError:
        problems.append(f"{name}: no such message in Envoy's API"); return
    for field in message.field:
        real = reference.fields_by_name.get(field.name)
        checked += 1
        if real is None:
            problems.append(f"{name}.{field.name}: no such field")
        elif (real.number, real.type, repeated(real)) != (field.number, field.type, field.label == field.LABEL_REPEATED):
            problems.append(f"{name}.{field.name}: ours #{field.number} type {field.type} repeated {field.label == field.LABEL_REPEATED}, "
                            f"Envoy's #{real.number} type {real.type} repeated {repeated(real)}")
    for nested in message.nested_type:
        if not nested.options.map_entry:
            check_message(nested, name)
    for enum in message.enum_type:
        check_enum(enum, name)

def check_enum(enum, prefix):
    global checked
    name = f"{prefix}.{enum.name}"
    reference = pool.FindEnumTypeByName(name)
    for value in enum.value:
        checked += 1
        real = reference.values_by_name.get(value.name)
        if real is None or real.number != value.number:
            problems.append(f"{name}.{value.name}: not Envoy's ({real.number if real else 'missing'})")

for file in ours.file:
    # google.protobuf is protoc's own; istio.v1.auth (the CA API) is not in Envoy's descriptors, and its
    # wire format is checked end to end against a CA built from the same file by grpcio-tools.
    if file.package.startswith("google.protobuf") or file.package.startswith("istio."):
        continue
    for message in file.message_type:
        check_message(message, file.package)
    for enum in file.enum_type:
        check_enum(enum, file.package)

print("\n".join(problems) or f"proto/: {checked} fields and enum values match Envoy's descriptors")
sys.exit(1 if problems else 0)
