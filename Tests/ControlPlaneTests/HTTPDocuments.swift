/// Istio-style documents for `payments` over HTTP: port 9080 named `http-payments`, v1 and v2 on
/// 8080, and a gRPC `ledger` service.
enum HTTPDocuments {
    static let serviceEntry = Documents.serviceEntry.replacingOccurrences(of: "name: tcp-payments, protocol: TCP", with: "name: http-payments")
    static func workload(_ name: String, _ address: String, _ version: String) -> String {
        Documents.workload(name, address, version).replacingOccurrences(of: "tcp-payments: 8080", with: "http-payments: 8080")
    }
    static let ledger = """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: ledger, namespace: billing}
        spec:
          hosts: [ledger]
          addresses: [198.51.100.201]
          ports: [{number: 7070, name: api, protocol: GRPC}]
          resolution: STATIC
          endpoints: [{address: 198.51.100.50}]
        """
    static let destinationRule = """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: payments, namespace: shop}
        spec:
          host: payments
          subsets:
          - {name: v1, labels: {version: v1}}
          - {name: v2, labels: {version: v2}, trafficPolicy: {connectionPool: {http: {h2UpgradePolicy: UPGRADE}}}}
        """
    /// `http:` routes of a VirtualService for payments.
    static func virtualService(_ http: String, name: String = "payments") -> String {
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: \(name), namespace: shop}
        spec:
          hosts: [payments]
          http:
        \(http)
        """
    }
    static let canary = virtualService("""
          - route:
            - {destination: {host: payments, subset: v1}, weight: 90}
            - {destination: {host: payments, subset: v2}, weight: 10}
        """)
    static func mesh(_ extra: [String] = []) -> String {
        ([serviceEntry, workload("payments-v1", "198.51.100.10", "v1"), workload("payments-v2", "198.51.100.99", "v2"),
          destinationRule, ledger] + extra).joined(separator: "\n---\n")
    }
}
