import NIOCore

/// Envoy's `envoy.filters.listener.http_inspector`: on a plaintext connection, reads the first bytes
/// (without consuming them) and names the HTTP version they begin, as the application protocol filter
/// chains match on: `h2c` for HTTP/2's connection preface, `http/1.1` or `http/1.0` for a request line,
/// nothing for anything else.
enum HTTPInspector {
    private static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
    /// How far a request line is looked for before the connection is taken for something else.
    private static let longestRequestLine = 8192

    /// The application protocols for `bytes` (empty: not HTTP), or nil when more bytes are needed.
    /// `complete`: no more bytes will come, so decide with what there is.
    static func inspect(_ bytes: ByteBuffer, complete: Bool) -> [String]? {
        let view = bytes.readableBytesView
        let head = view.prefix(preface.count)
        if head.elementsEqual(preface.prefix(head.count)) {
            if head.count == preface.count { return ["h2c"] }
            return complete ? [] : nil
        }
        guard let end = view.prefix(longestRequestLine).firstIndex(of: UInt8(ascii: "\r")) else {
            return complete || view.count >= longestRequestLine ? [] : nil
        }
        // METHOD SP REQUEST-TARGET SP HTTP/1.x
        let line = view[view.startIndex..<end]
        let parts = line.split(separator: UInt8(ascii: " "), omittingEmptySubsequences: false)
        guard parts.count == 3, !parts[0].isEmpty, parts[0].allSatisfy(isTokenCharacter), !parts[1].isEmpty else { return [] }
        switch String(decoding: parts[2], as: UTF8.self) {
        case "HTTP/1.1": return ["http/1.1"]
        case "HTTP/1.0": return ["http/1.0"]
        default: return []
        }
    }

    /// A method is a token: upper-case letters in practice; any visible character but separators.
    private static func isTokenCharacter(_ byte: UInt8) -> Bool {
        byte > 0x20 && byte < 0x7F && !"()<>@,;:\\\"/[]?={}".utf8.contains(byte)
    }
}
