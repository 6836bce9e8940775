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
/// Written atomically with mode 0600 after every change; not synced to disk, since what it records (pod
/// network namespaces) does not outlive a reboot either.
public struct ManagedPodStore: Sendable {
    public let path: String

    public init(path: String) {
        self.path = path
    }

    private struct Document: Codable {
        var version = 1
        var pods: [ManagedPodRecord]
    }

    /// The recorded pods; none if the file does not exist yet.
    public func load() throws -> [ManagedPodRecord] {
        guard let text = SystemFile.read(path) else { return [] }
        do {
            return try JSONDecoder().decode(Document.self, from: Data(text.utf8)).pods
        } catch {
            throw ManagedPodStoreError(path: path, reason: "unreadable state file: \(error)")
        }
    }

    public func save(_ pods: [ManagedPodRecord]) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        let data = try encoder.encode(Document(pods: pods.sorted { $0.pod.containerID < $1.pod.containerID }))
        try SystemFile.replace(path, with: data, mode: 0o600, durable: false)
    }
}

public struct ManagedPodStoreError: Error, CustomStringConvertible, Sendable {
    public let path: String
    public let reason: String
    public var description: String { "\(path): \(reason)" }
}
