import NIOSSL
#if canImport(Glibc)
import Glibc
#endif

/// Who a certificate says its holder is: its subject alt names, and among them the SPIFFE ID a mesh
/// workload is known by (`spiffe://cluster.local/ns/shop/sa/payments`), as Istio's `source_principal`
/// and `destination_principal` name it.
enum PeerIdentity {
    /// A subject alt name of a certificate, as text (an IP address in its usual notation).
    struct SubjectAltName: Sendable, Equatable {
        enum Kind: Sendable, Equatable {
            case uri, dns, email, ipAddress
        }
        var kind: Kind
        var value: String
    }

    /// The certificate's subject alt names of the kinds Capstan matches (others, such as otherName, are left out).
    static func subjectAltNames(of certificate: NIOSSLCertificate) -> [SubjectAltName] {
        var names: [SubjectAltName] = []
        for name in certificate._subjectAlternativeNames() {
            let bytes = name.contents.withUnsafeBufferPointer { Array($0) }
            switch name.nameType {
            case .uri: names.append(SubjectAltName(kind: .uri, value: String(decoding: bytes, as: UTF8.self)))
            case .dnsName: names.append(SubjectAltName(kind: .dns, value: String(decoding: bytes, as: UTF8.self)))
            case .email: names.append(SubjectAltName(kind: .email, value: String(decoding: bytes, as: UTF8.self)))
            case .ipAddress:
                if let text = ipAddressText(bytes) { names.append(SubjectAltName(kind: .ipAddress, value: text)) }
            default: continue
            }
        }
        return names
    }

    /// The first `spiffe://` URI SAN of `certificate`, or nil when it has none.
    static func spiffeID(of certificate: NIOSSLCertificate) -> String? {
        for name in certificate._subjectAlternativeNames() where name.nameType == .uri {
            let text = name.contents.withUnsafeBufferPointer { String(decoding: $0, as: UTF8.self) }
            if text.hasPrefix("spiffe://") { return text }
        }
        return nil
    }

    /// `192.0.2.1` or `2001:db8::1` for the 4 or 16 bytes an iPAddress SAN holds.
    private static func ipAddressText(_ bytes: [UInt8]) -> String? {
        let family: Int32
        switch bytes.count {
        case 4: family = AF_INET
        case 16: family = AF_INET6
        default: return nil
        }
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let written = bytes.withUnsafeBytes { address in
            inet_ntop(family, address.baseAddress, &text, socklen_t(text.count))
        }
        guard written != nil else { return nil }
        return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
