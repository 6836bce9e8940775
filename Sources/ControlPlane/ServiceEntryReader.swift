import Configuration

/// The ServiceEntry fields that concern where a service lives and how its endpoints are found:
/// `location`, resolution DNS, and an endpoint's `locality`, `weight` and `network`.
enum ServiceEntryReader {
    /// `location`: MESH_EXTERNAL or MESH_INTERNAL; nil when not given.
    static func location(_ spec: ConfigReader) throws(ConfigError) -> ServiceEntry.Location? {
        guard let field = try spec.optional("location") else { return nil }
        let text = try field.string()
        guard let location = ServiceEntry.Location(rawValue: text) else {
            throw field.fail("\"\(text)\" is not a location (MESH_EXTERNAL, MESH_INTERNAL)")
        }
        return location
    }

    /// Istio's validation for DNS resolution: without endpoints, the hosts themselves are looked up, so
    /// none may be a wildcard; a workloadSelector picks workloads by address, which DNS does not take.
    static func checkResolution(_ resolution: ServiceEntry.Resolution, hosts: [String], endpoints: [WorkloadEndpoint],
                                selector: [String: String]?, spec: ConfigReader) throws(ConfigError) {
        guard resolution.resolvesNames else { return }
        if endpoints.isEmpty {
            for (index, host) in hosts.enumerated() where host.contains("*") {
                throw ConfigError(path: "spec.hosts[\(index)]", message: "\"\(host)\": a wildcard host cannot be resolved (resolution \(resolution.rawValue) without endpoints looks the hosts up)")
            }
        }
        if selector != nil {
            throw ConfigError(path: "spec.workloadSelector", message: "cannot be used with resolution \(resolution.rawValue) (Capstan, as Istio, selects workloads for STATIC services)")
        }
        if resolution == .dnsRoundRobin && endpoints.count > 1 {
            throw ConfigError(path: "spec.endpoints", message: "resolution DNS_ROUND_ROBIN takes one endpoint (Envoy's LOGICAL_DNS resolves one name)")
        }
    }

    /// An endpoint's `weight` (1 to 2^32-1, 0 read as unset, as Istio reads it), `locality` and `network`.
    static func readPlacement(_ reader: ConfigReader, into endpoint: inout WorkloadEndpoint, warnings: inout [String]) throws(ConfigError) {
        if let field = try reader.optional("weight") {
            let weight = try field.integer(in: 0...Int(UInt32.max))
            endpoint.weight = weight == 0 ? nil : weight
        }
        if let field = try reader.optional("locality") {
            let text = try field.string()
            let parts = text.split(separator: "/", omittingEmptySubsequences: false)
            guard !text.isEmpty, parts.count <= 3, !parts.contains(where: \.isEmpty) else {
                throw field.fail("\"\(text)\" is not a locality (region, region/zone or region/zone/subzone)")
            }
            endpoint.locality = text
        }
        if let field = try reader.optional("network") {
            let network = try field.string()
            if !network.isEmpty { endpoint.network = network }
        }
    }

    /// A DNS name (letters, digits, `-`, dots between labels of up to 63 bytes), not an IP address.
    static func isHostName(_ text: String) -> Bool {
        guard !text.isEmpty, text.utf8.count <= 253, IPNetwork(text) == nil else { return false }
        let labels = text.split(separator: ".", omittingEmptySubsequences: false)
        return labels.allSatisfy { label in
            !label.isEmpty && label.utf8.count <= 63 && label.first != "-" && label.last != "-"
                && label.unicodeScalars.allSatisfy { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "-" || $0 == "_") }
        }
    }
}
