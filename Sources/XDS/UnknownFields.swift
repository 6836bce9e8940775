import FoundationEssentials
import SwiftProtobuf

/// Fields of a decoded xDS message that Capstan's `proto/` subset does not have. protobuf keeps them as
/// unknown bytes and nobody would see them; the decoders (the proxy's listeners and clusters, route
/// tables) list them with the fields accepted but not acted on, so a control plane's configuration is
/// never silently half-read. Paths are field numbers, as Envoy's API declares them (`#5[0].#3` is field 3
/// of the first element of field 5), since the subset has no name for a field it lacks.
public enum UnknownFields {
    /// Why such a field is listed as not acted on.
    public static let reason = "a field Capstan's subset of Envoy's API does not have (by its number): not read"

    /// The path of every unknown field in `message` and the messages inside it, in order.
    public static func paths(in message: some SwiftProtobuf.Message) -> [String] {
        var finder = Finder()
        try? message.traverse(visitor: &finder)
        return finder.found
    }

    /// Walks a message, descending into every message field, and notes where unknown bytes are.
    private struct Finder: SwiftProtobuf.Visitor {
        var path: [String] = []
        var found: [String] = []

        mutating func visitUnknown(bytes: Data) throws {
            var reader = bytes[...]
            while let number = Self.nextFieldNumber(&reader) {
                found.append((path + ["#\(number)"]).joined(separator: "."))
            }
        }

        mutating func visitSingularMessageField<M: SwiftProtobuf.Message>(value: M, fieldNumber: Int) throws {
            path.append("#\(fieldNumber)")
            try value.traverse(visitor: &self)
            path.removeLast()
        }

        mutating func visitRepeatedMessageField<M: SwiftProtobuf.Message>(value: [M], fieldNumber: Int) throws {
            for (index, element) in value.enumerated() {
                path.append("#\(fieldNumber)[\(index)]")
                try element.traverse(visitor: &self)
                path.removeLast()
            }
        }

        mutating func visitMapField<KeyType, ValueType: SwiftProtobuf.Message & Hashable>(
            fieldType: _ProtobufMessageMap<KeyType, ValueType>.Type,
            value: _ProtobufMessageMap<KeyType, ValueType>.BaseType, fieldNumber: Int
        ) throws {
            for (key, element) in value {
                path.append("#\(fieldNumber)[\(key)]")
                try element.traverse(visitor: &self)
                path.removeLast()
            }
        }

        // Scalars, enums and maps of scalars hold no messages.
        mutating func visitSingularDoubleField(value: Double, fieldNumber: Int) throws {}
        mutating func visitSingularInt64Field(value: Int64, fieldNumber: Int) throws {}
        mutating func visitSingularUInt64Field(value: UInt64, fieldNumber: Int) throws {}
        mutating func visitSingularBoolField(value: Bool, fieldNumber: Int) throws {}
        mutating func visitSingularStringField(value: String, fieldNumber: Int) throws {}
        mutating func visitSingularBytesField(value: Data, fieldNumber: Int) throws {}
        mutating func visitSingularEnumField<E: SwiftProtobuf.Enum>(value: E, fieldNumber: Int) throws {}
        mutating func visitMapField<KeyType, ValueType: MapValueType>(
            fieldType: _ProtobufMap<KeyType, ValueType>.Type, value: _ProtobufMap<KeyType, ValueType>.BaseType, fieldNumber: Int
        ) throws {}
        mutating func visitMapField<KeyType, ValueType>(
            fieldType: _ProtobufEnumMap<KeyType, ValueType>.Type, value: _ProtobufEnumMap<KeyType, ValueType>.BaseType, fieldNumber: Int
        ) throws where ValueType.RawValue == Int {}

        /// Reads one field's key from protobuf wire bytes and skips its value; nil at the end or on bytes
        /// that are not a well-formed field.
        private static func nextFieldNumber(_ bytes: inout Data.SubSequence) -> UInt64? {
            guard let key = varint(&bytes), key >> 3 > 0 else { return nil }
            switch key & 7 {
            case 0: guard varint(&bytes) != nil else { return nil }
            case 1: guard bytes.count >= 8 else { return nil }; bytes = bytes.dropFirst(8)
            case 2:
                guard let length = varint(&bytes), length <= UInt64(bytes.count) else { return nil }
                bytes = bytes.dropFirst(Int(length))
            case 5: guard bytes.count >= 4 else { return nil }; bytes = bytes.dropFirst(4)
            default: return nil  // groups (3, 4) are not in Envoy's API
            }
            return key >> 3
        }

        private static func varint(_ bytes: inout Data.SubSequence) -> UInt64? {
            var value: UInt64 = 0
            var shift: UInt64 = 0
            while let byte = bytes.first, shift < 64 {
                bytes = bytes.dropFirst()
                value |= UInt64(byte & 0x7F) << shift
                if byte & 0x80 == 0 { return value }
                shift += 7
            }
            return nil
        }
    }
}
