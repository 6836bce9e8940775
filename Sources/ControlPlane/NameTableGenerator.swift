import SwiftProtobuf
import XDS

/// Istio's NDS: the `NameTable` a proxy's agent answers DNS from, built from the ServiceEntries as istiod
/// builds it from its services.
/// - A host's addresses are the ServiceEntry's `addresses` that are IPs (CIDRs are left out, as istiod
///   does); ServiceEntries naming the same host add theirs.
/// - Without addresses, a `resolution: NONE` entry answers with its endpoints' IPs (a headless service);
///   other entries without addresses are left out, unless the proxy asked for auto-allocation.
/// - A host `NAME.NS.svc.cluster.local` whose NS is the ServiceEntry's namespace stands for a Kubernetes
///   Service (the file-backed control plane has no Kubernetes registry): it goes out with registry
///   `Kubernetes`, short name and namespace, so the agent also answers `NAME.NS` and, in NS, `NAME`.
///   Every other host has registry `External`.
/// - With `ISTIO_META_DNS_AUTO_ALLOCATE` (node metadata `DNS_AUTO_ALLOCATE=true`), non-wildcard hosts of
///   entries without addresses and with a resolution other than NONE get a VIP from Istio's class E range
///   240.240.0.0/16, in host order (addresses ending in .0 or .255 skipped), the same for every proxy.
enum NameTableGenerator {
    /// The two variants a proxy may ask for, packed once per configuration.
    struct Tables: Sendable, Equatable {
        var plain = Istio_Networking_Nds_V1_NameTable()
        var autoAllocated = Istio_Networking_Nds_V1_NameTable()

        func packed(autoAllocate: Bool) throws -> Google_Protobuf_Any {
            try .packed(autoAllocate ? autoAllocated : plain, as: .nameTable)
        }
    }

    static let clusterDomainSuffix = ".svc.cluster.local"
    static let autoAllocationBase: UInt32 = 240 << 24 | 240 << 16

    /// The tables of `serviceEntries` (those a proxy sees), their VIPs allocated over `all` (every
    /// ServiceEntry; by default the same), so that a host has one VIP whichever proxy asks.
    static func tables(for serviceEntries: [ServiceEntry], allocatingOver all: [ServiceEntry]? = nil) -> Tables {
        Tables(plain: table(for: serviceEntries, allocated: [:]),
               autoAllocated: table(for: serviceEntries, allocated: allocations(for: all ?? serviceEntries)))
    }

    /// VIPs for the hosts auto-allocation covers, by host, sequential in host order.
    static func allocations(for serviceEntries: [ServiceEntry]) -> [String: String] {
        let hosts = Set(serviceEntries.filter { $0.addresses.isEmpty && $0.resolution != .none }
            .flatMap(\.hosts).filter { !$0.hasPrefix("*") }).sorted()
        var result: [String: String] = [:]
        var offset: UInt32 = 0
        for host in hosts {
            var address: UInt32
            repeat {
                offset += 1
                address = autoAllocationBase | offset
            } while address & 0xFF == 0 || address & 0xFF == 0xFF
            guard offset < 0x1_0000 else { break }
            result[host] = "\(address >> 24).\(address >> 16 & 0xFF).\(address >> 8 & 0xFF).\(address & 0xFF)"
        }
        return result
    }

    static func table(for serviceEntries: [ServiceEntry], allocated: [String: String]) -> Istio_Networking_Nds_V1_NameTable {
        var table = Istio_Networking_Nds_V1_NameTable()
        for entry in serviceEntries {
            let vips = entry.addresses.filter { !$0.contains("/") && isIPAddress($0) }
            for host in entry.hosts {
                var ips = vips
                if ips.isEmpty, entry.addresses.isEmpty {
                    if entry.resolution == .none {
                        ips = entry.endpoints.map(\.address).filter(isIPAddress)
                    } else if let vip = allocated[host] {
                        ips = [vip]
                    }
                }
                guard !ips.isEmpty else { continue }
                if var existing = table.table[host] {
                    existing.ips += ips.filter { !existing.ips.contains($0) }
                    table.table[host] = existing
                    continue
                }
                var info = Istio_Networking_Nds_V1_NameTable.NameInfo()
                info.ips = ips
                let labels = host.split(separator: ".", omittingEmptySubsequences: false)
                if host.hasSuffix(clusterDomainSuffix), labels.count == 5, labels[1] == entry.namespace, !labels[0].isEmpty {
                    info.registry = "Kubernetes"
                    info.shortname = String(labels[0])
                    info.namespace = entry.namespace
                } else {
                    info.registry = "External"
                }
                table.table[host] = info
            }
        }
        return table
    }

    private static func isIPAddress(_ text: String) -> Bool {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        if parts.count == 4 { return parts.allSatisfy { UInt8($0) != nil && !$0.isEmpty } }
        return text.contains(":") && text.allSatisfy { $0.isHexDigit || $0 == ":" || $0 == "." }
    }
}
