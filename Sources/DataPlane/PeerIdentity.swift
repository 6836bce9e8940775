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
            func text() -> String { name.contents.withUnsafeBufferPointer { String(decoding: $0, as: UTF8.self) } }
            switch name.nameType {
            case .uri: names.append(SubjectAltName(kind: .uri, value: text()))
            case .dnsName: names.append(SubjectAltName(kind: .dns, value: text()))
            case .email: names.append(SubjectAltName(kind: .email, value: text()))
            case .ipAddress:
                if let address = name.contents.withUnsafeBufferPointer({ ipAddressText(Array($0)) }) {
                    names.append(SubjectAltName(kind: .ipAddress, value: address))
                }
            default: continue
            }
        }
        return names
    }

    /// The first `spiffe://` URI among `names`, or nil when there is none.
    static func spiffeID(in names: [SubjectAltName]) -> String? {
        names.first { $0.kind == .uri && $0.value.hasPrefix("spiffe://") }?.value
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
