import Capture
import FoundationEssentials
import Netfilter

/// One pod the node agent manages: its attachment and the capture spec it was given.
public struct ManagedPodRecord: Codable, Sendable, Equatable {
    public var pod: PodAttachment
    /// The spec as `--option=value` arguments (``CaptureSpec/canonicalArguments``).
    public var spec: [String]

    public init(pod: PodAttachment, spec: CaptureSpec) {
        self.pod = pod
        self.spec = spec.canonicalArguments
    }

    public func captureSpec() throws -> CaptureSpec {
        try CaptureSpec(canonicalArguments: spec)
    }
}

/// The node agent's state file: the pods it manages, so a restarted agent takes them up again.
///
/// One JSON object per line, one line per pod: the agent encodes a pod's line once, when it records the
/// pod, so rewriting the file after each change costs a copy, not re-encoding every pod. Written
/// atomically with mode 0600; not synced to disk, since what it records (pod network namespaces) does
/// not outlive a reboot either.
public struct ManagedPodStore: Sendable {
    public let path: String

    public init(path: String) {
        self.path = path
    }

    /// A record as its line in the file.
    public static func line(for record: ManagedPodRecord) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array(try encoder.encode(record)) + [UInt8(ascii: "\n")]
    }

    /// The recorded pods; none if the file does not exist yet.
    public func load() throws -> [ManagedPodRecord] {
        guard let text = SystemFile.read(path) else { return [] }
        return try text.split(separator: "\n").enumerated().map { number, line in
            do {
                return try JSONDecoder().decode(ManagedPodRecord.self, from: Data(line.utf8))
            } catch {
                throw ManagedPodStoreError(path: path, reason: "line \(number + 1) is not a pod record: \(error)")
            }
        }
    }

    /// Replaces the file with these lines (from ``line(for:)``).
    public func save(lines: [[UInt8]]) throws {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(lines.reduce(0) { $0 + $1.count })
        for line in lines { bytes += line }
        try SystemFile.replace(path, with: bytes, mode: 0o600, durable: false)
    }
}

public struct ManagedPodStoreError: Error, CustomStringConvertible, Sendable {
    public let path: String
    public let reason: String
    public var description: String { "\(path): \(reason)" }
}
