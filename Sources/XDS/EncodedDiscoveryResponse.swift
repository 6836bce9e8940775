import GRPCCore

/// A `DiscoveryResponse` whose resources are already encoded, in a shared ``XDSResourceList``: what the
/// ADS server writes to a stream. On the wire it is the same message as `DiscoveryResponse`
/// (`version_info` 1, `resources` 2, `type_url` 4, `nonce` 5).
struct EncodedDiscoveryResponse: Sendable {
    var versionInfo: String
    var typeURL: String
    var nonce: String
    var list: XDSResourceList
    /// The positions in `list` sent, in order; nil: all of them.
    var selection: [Int]?

    /// Encodes the response in field order, as protobuf encoders do: the fixed fields around one copy of
    /// the chosen entries.
    struct Serializer: MessageSerializer {
        func serialize<Bytes: GRPCContiguousBytes>(_ message: EncodedDiscoveryResponse) throws -> Bytes {
            let head = Self.fields([(1, message.versionInfo)])
            let tail = Self.fields([(4, message.typeURL), (5, message.nonce)])
            let entries = message.list.encodedSize(of: message.selection)
            var bytes = Bytes(repeating: 0, count: head.count + entries + tail.count)
            bytes.withUnsafeMutableBytes { destination in
                head.withUnsafeBytes { destination.copyMemory(from: $0) }
                message.list.copyEntries(message.selection, to: UnsafeMutableRawBufferPointer(rebasing: destination[head.count...]))
                tail.withUnsafeBytes { UnsafeMutableRawBufferPointer(rebasing: destination[(head.count + entries)...]).copyMemory(from: $0) }
            }
            return bytes
        }

        /// String fields, those with a value (proto3 leaves empty ones out).
        private static func fields(_ fields: [(number: Int, text: String)]) -> [UInt8] {
            var bytes: [UInt8] = []
            for (number, text) in fields where !text.isEmpty {
                ProtobufWire.appendTag(field: number, to: &bytes)
                ProtobufWire.appendVarint(UInt64(text.utf8.count), to: &bytes)
                bytes.append(contentsOf: text.utf8)
            }
            return bytes
        }
    }
}
