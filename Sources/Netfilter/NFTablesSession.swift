import CNFTables

/// An error reported by libnftables, with the library's own message.
public struct NFTablesError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public var description: String { message }
}

/// A libnftables context: runs nftables scripts in-process, each as one kernel transaction.
///
/// A context talks to the network namespace of the thread that created it, so create it after entering
/// the target namespace (see ``NetworkNamespace/run(_:)``) and use it on that thread only.
public final class NFTablesSession {
    private let context: OpaquePointer

    /// Loads libnftables on first use (see `CNFTables`), then makes a context.
    public init() throws(NFTablesError) {
        if let reason = capstan_nft_load() { throw NFTablesError(message: String(cString: reason)) }
        guard let context = capstan_nft_ctx_new(UInt32(CAPSTAN_NFT_CTX_DEFAULT)) else {
            throw NFTablesError(message: "libnftables: cannot create a context")
        }
        self.context = context
        capstan_nft_ctx_buffer_output(context)
        capstan_nft_ctx_buffer_error(context)
    }

    deinit {
        capstan_nft_ctx_free(context)
    }

    /// Runs `script` as one atomic transaction and returns what nftables printed (for `list` commands).
    @discardableResult
    public func run(_ script: String) throws(NFTablesError) -> String {
        let status = capstan_nft_run_cmd_from_buffer(context, script)
        let output = capstan_nft_ctx_get_output_buffer(context).map { String(cString: $0) } ?? ""
        let errors = capstan_nft_ctx_get_error_buffer(context).map { String(cString: $0) } ?? ""
        guard status == 0 else {
            let message = errors.isEmpty ? "libnftables: transaction failed (status \(status))" : errors
            throw NFTablesError(message: message.trimmingTrailingNewlines())
        }
        return output
    }
}

extension String {
    func trimmingTrailingNewlines() -> String {
        var result = self
        while result.last == "\n" { result.removeLast() }
        return result
    }
}
