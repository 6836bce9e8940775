import SwiftProtobuf

/// Resources of one type, each encoded once as an entry of a `DiscoveryResponse`, and shared by every
/// stream that is sent them: a push to many proxies copies these bytes instead of encoding each
/// resource again for each stream.
public final class XDSResourceList: Sendable {
    /// By resource name, in a stable order.
    public let resources: [(name: String, resource: Google_Protobuf_Any)]
    /// Every resource as the `resources` field (2) of a `DiscoveryResponse`, back to back.
    let entries: [UInt8]
    /// Where each resource's entry ends in `entries`.
    let ends: [Int]

    public init(_ resources: [(name: String, resource: Google_Protobuf_Any)]) {
        self.resources = resources
        var entries: [UInt8] = []
        var ends: [Int] = []
        ends.reserveCapacity(resources.count)
        for (_, resource) in resources {
            // An Any is its type URL (field 1) and its value (field 2): encoded here by hand, from the bytes
            // `packed` made, so that nothing is decoded again and nothing can fail.
            let typeURL = resource.typeURL.utf8
            let value = resource.value
            let anySize = ProtobufWire.fieldSize(typeURL.count) + ProtobufWire.fieldSize(value.count)
            ProtobufWire.appendTag(field: 2, to: &entries)
            ProtobufWire.appendVarint(UInt64(anySize), to: &entries)
            ProtobufWire.appendTag(field: 1, to: &entries)
            ProtobufWire.appendVarint(UInt64(typeURL.count), to: &entries)
            entries.append(contentsOf: typeURL)
            ProtobufWire.appendTag(field: 2, to: &entries)
            ProtobufWire.appendVarint(UInt64(value.count), to: &entries)
            entries.append(contentsOf: value)
            ends.append(entries.count)
        }
        self.entries = entries
        self.ends = ends
    }

    /// The entries' size: all of them (`selection` nil), or those at `selection`'s positions.
    func encodedSize(of selection: [Int]?) -> Int {
        guard let selection else { return entries.count }
        return selection.reduce(0) { $0 + entryRange($1).count }
    }

    /// Where the resource at `position` has its entry in `entries`.
    private func entryRange(_ position: Int) -> Range<Int> {
        (position == 0 ? 0 : ends[position - 1])..<ends[position]
    }

    /// Copies the entries (all, or those at `selection`'s positions, in that order) to the start of
    /// `destination`, which holds ``encodedSize(of:)`` bytes at least.
    func copyEntries(_ selection: [Int]?, to destination: UnsafeMutableRawBufferPointer) {
        entries.withUnsafeBytes { source in
            guard let selection else { return destination.copyMemory(from: source) }
            var written = 0
            for position in selection {
                let entry = UnsafeRawBufferPointer(rebasing: source[entryRange(position)])
                UnsafeMutableRawBufferPointer(rebasing: destination[written...]).copyMemory(from: entry)
                written += entry.count
            }
        }
    }
}

/// The few pieces of protobuf's wire format that encoding a `DiscoveryResponse` by hand needs:
/// length-delimited fields (wire type 2) with field numbers below 16.
enum ProtobufWire {
    static func appendTag(field: Int, to bytes: inout [UInt8]) {
        bytes.append(UInt8(field << 3 | 2))
    }

    static func appendVarint(_ value: UInt64, to bytes: inout [UInt8]) {
        var value = value
        while value >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: value) | 0x80)
            value >>= 7
        }
        bytes.append(UInt8(value))
    }

    static func varintSize(_ value: Int) -> Int {
        var size = 1
        var value = UInt64(value)
        while value >= 0x80 {
            size += 1
            value >>= 7
        }
        return size
    }

    /// A length-delimited field's size with its tag and length: `length` bytes of content.
    static func fieldSize(_ length: Int) -> Int { 1 + varintSize(length) + length }
}
