"""Envoy's configuration types for the Python peers, from descriptors we did not write: every message of
PyPI's xds-protos (Envoy's own generated code, with the udpa and xds packages it uses) and Istio's extension
configurations (istio_api.py, compiled from the transcriptions of Istio's published files), all registered
in protobuf's default descriptor pool, so that json_format can read an Envoy config dump, whose Any fields
name any extension, back into messages.

A type URL that neither knows (an extension of some other build of Envoy) is declared here as an empty
message of the same name, so that the Any keeps its type URL and carries an empty value; the fields the JSON
had for it are dropped and counted in `opaque`. A consumer that keys on the type URL still sees the
extension; one that decodes the value sees its defaults.
"""
import importlib
import pkgutil

import envoy
import udpa
import xds
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

from istio_api import load_extension_types

TYPE_PREFIX = "type.googleapis.com/"
_registered = False
# Type name -> number of JSON objects of that type whose fields were dropped (see the module's docstring).
opaque = {}


def register_all():
    """Imports every *_pb2 module of xds-protos and Istio's extension types, once."""
    global _registered
    if _registered:
        return
    for package in (envoy, udpa, xds):
        for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if module.name.endswith("_pb2"):
                importlib.import_module(module.name)
    load_extension_types()
    _registered = True


def known(type_name):
    try:
        descriptor_pool.Default().FindMessageTypeByName(type_name)
        return True
    except KeyError:
        return False


def _declare_opaque(type_name):
    package, _, name = type_name.rpartition(".")
    file = descriptor_pb2.FileDescriptorProto(name=f"capstan-opaque/{type_name}.proto", package=package, syntax="proto3")
    file.message_type.add(name=name)
    descriptor_pool.Default().Add(file)


def _prepared(value):
    """A copy of a JSON value in which every object typed by an unknown type URL is reduced to its @type."""
    if isinstance(value, list):
        return [_prepared(item) for item in value]
    if not isinstance(value, dict):
        return value
    type_url = value.get("@type")
    if isinstance(type_url, str) and type_url.startswith(TYPE_PREFIX):
        type_name = type_url[len(TYPE_PREFIX):]
        if type_name not in opaque and not known(type_name):
            _declare_opaque(type_name)
            opaque[type_name] = 0
        if type_name in opaque:
            if len(value) > 1:
                opaque[type_name] += 1
            return {"@type": type_url}
    return {key: _prepared(item) for key, item in value.items()}


def message_class(type_url):
    register_all()
    descriptor = descriptor_pool.Default().FindMessageTypeByName(type_url[len(TYPE_PREFIX):])
    return message_factory.GetMessageClass(descriptor)


def message_from_any(value):
    """The message an Any packs, decoded from its bytes."""
    return message_class(value.type_url).FromString(value.value)


def message_from_json(value):
    """The message a JSON object with an "@type" (as in a config dump) describes."""
    register_all()
    value = _prepared(value)
    message = message_class(value["@type"])()
    json_format.ParseDict({key: item for key, item in value.items() if key != "@type"}, message)
    return message
