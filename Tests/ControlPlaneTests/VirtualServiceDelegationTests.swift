@testable import ControlPlane
import Testing

/// Istio's VirtualService delegation, as istiod merges it: a root route's `delegate` replaced by the
/// delegate's routes, their matches within the root's, the root's settings where the delegate has none.
@Suite struct VirtualServiceDelegationTests {
    /// A delegate VirtualService (no hosts) in `namespace`.
    static func delegate(_ name: String, namespace: String = "shop", _ http: String) -> String {
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: \(name), namespace: \(namespace)}
        spec:
          http:
        \(http)
        """
    }

    func reading(_ documents: [String]) -> MeshConfigReading {
        MeshConfigReader.read([("mesh.yaml", HTTPDocuments.mesh(documents))])
    }

    /// Istio's documented example: the root sends `/productpage` to a delegate owned by another team,
    /// whose routes split it by header and path.
    @Test func delegateRoutesTakeTheRootRoutesPlace() throws {
        let root = HTTPDocuments.virtualService("""
              - name: pages
                match: [{uri: {prefix: /productpage}}]
                timeout: 3s
                headers: {request: {set: {x-root: "yes"}}}
                delegate: {name: productpage, namespace: shop}
              - route: [{destination: {host: payments, subset: v1}}]
            """)
        let delegate = Self.delegate("productpage", """
              - name: jason
                match: [{headers: {end-user: {exact: jason}}, uri: {prefix: /productpage/v2}}]
                route: [{destination: {host: payments, subset: v2}}]
              - name: outside
                match: [{uri: {prefix: /reviews}}]
                route: [{destination: {host: payments, subset: v2}}]
              - timeout: 1s
                route: [{destination: {host: payments, subset: v1}}]
            """)
        let reading = reading([root, delegate])
        let config = try #require(reading.config, "\(reading.problems)")
        let http = try #require(config.virtualServices.first { $0.origin.name == "shop/payments" }?.http)
        #expect(http.map(\.name) == ["pages-jason", "pages", nil])
        // The delegate's match within the root's: its own uri and header, the root's where it has none.
        #expect(http[0].matches.count == 1 && http[0].matches[0].uri == .prefix("/productpage/v2"))
        #expect(http[0].matches[0].headers.map(\.name) == ["end-user"])
        #expect(http[0].action == .route([.init(host: "payments.shop.svc.cluster.local", subset: "v2", port: nil, weight: 100)]))
        // No match of its own: the root's; its own timeout over the root's; the root's headers where it has none.
        #expect(http[1].matches.map(\.uri) == [.prefix("/productpage")])
        #expect(http[1].timeout == .seconds(1) && http[0].timeout == .seconds(3))
        #expect(http[0].headers?.request.overwrite.first?.name == "x-root")
        // /reviews is outside /productpage: left out, said.
        #expect(reading.warnings.contains { $0.contains("VirtualService shop/productpage: spec.http[1].match: outside every match of shop/payments's spec.http[0]") },
                "\(reading.warnings)")
        // The merged routes are what the sidecars get, in order, before the root's own next route.
        let routes = HTTPRouteGenerator.routes(http[0], port: 9080, config: config)
        #expect(routes.first?.match.prefix == "/productpage/v2" && routes.first?.name == "pages-jason")
    }

    @Test(arguments: [
        // root, delegate, conflict
        ("{uri: {prefix: /a}}", "{uri: {prefix: /a/b}}", false),
        ("{uri: {prefix: /a/b}}", "{uri: {prefix: /a}}", true),
        ("{uri: {prefix: /a}}", "{uri: {exact: /a/x}}", false),
        ("{uri: {exact: /a}}", "{uri: {prefix: /a}}", true),
        ("{uri: {exact: /a}}", "{uri: {exact: /a}}", false),
        ("{uri: {regex: /a.*}}", "{uri: {prefix: /a}}", true),
        ("{uri: {prefix: /a}}", "{uri: {regex: /a.*}}", true),
        ("{uri: {regex: /a.*}}", "{method: {exact: GET}}", false),
        ("{headers: {x: {exact: \"1\"}}}", "{headers: {x: {exact: \"2\"}}}", true),
        ("{headers: {x: {prefix: \"1\"}}}", "{headers: {x: {exact: \"12\"}, y: {exact: \"3\"}}}", false),
        ("{port: 80}", "{port: 8080}", true),
        ("{ignoreUriCase: true}", "{uri: {prefix: /a}}", true),
    ])
    func matchesConflictAsIstiodDecides(root: String, delegate: String, conflict: Bool) throws {
        let reading = reading([
            HTTPDocuments.virtualService("  - match: [\(root)]\n    delegate: {name: d}\n  - route: [{destination: {host: payments}}]"),
            Self.delegate("d", "  - match: [\(delegate)]\n    route: [{destination: {host: payments}}]"),
        ])
        let config = try #require(reading.config, "\(reading.problems)")
        let http = try #require(config.virtualServices.first?.http)
        #expect(http.count == (conflict ? 1 : 2), "\(http.map(\.matches))")
    }

    @Test func aMissingOrUnusedDelegateIsAWarningAndNestingIsRefused() throws {
        let missing = reading([HTTPDocuments.virtualService("  - delegate: {name: nowhere, namespace: other}\n  - route: [{destination: {host: payments}}]"),
                               Self.delegate("unused", "  - route: [{destination: {host: payments}}]")])
        let config = try #require(missing.config, "\(missing.problems)")
        #expect(config.virtualServices.first?.http.count == 1)
        #expect(missing.warnings.contains { $0.contains("spec.http[0].delegate: no VirtualService other/nowhere without hosts is defined") }, "\(missing.warnings)")
        #expect(missing.warnings.contains { $0.contains("VirtualService shop/unused: no route delegates to it") }, "\(missing.warnings)")
        let nested = reading([Self.delegate("d", "  - delegate: {name: e}")])
        #expect(nested.config == nil)
        #expect(nested.problems.contains { $0.description.contains("spec.http[0].delegate: a delegate VirtualService (one without hosts) cannot delegate again") },
                "\(nested.problems)")
        let both = reading([HTTPDocuments.virtualService("  - delegate: {name: d}\n    route: [{destination: {host: payments}}]")])
        #expect(both.problems.contains { $0.description.contains("has route and delegate: a route takes one of them") }, "\(both.problems)")
        // A delegate's destinations are checked where they are written.
        let bad = reading([HTTPDocuments.virtualService("  - delegate: {name: d}"), Self.delegate("d", "  - route: [{destination: {host: payments, subset: v9}}]")])
        #expect(bad.problems.contains { $0.description.contains("VirtualService shop/d: spec.http[0].route[0].destination.subset: no DestinationRule") }, "\(bad.problems)")
    }
}
