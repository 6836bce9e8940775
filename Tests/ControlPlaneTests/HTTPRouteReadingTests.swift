@testable import ControlPlane
import SwiftProtobuf
import Testing
import XDS

@Suite struct HTTPRouteReadingTests {
    static let jason = HTTPDocuments.virtualService("""
          - name: jason
            match: [{headers: {End-User: {exact: jason}, x-canary: {}}, uri: {prefix: /v1}, ignoreUriCase: true, port: 9080, gateways: [mesh]}]
            headers: {request: {set: {x-a: "1"}, add: {x-b: "2"}, remove: [X-C]}}
            timeout: 2s
            route: [{destination: {host: payments, subset: v2}}]
        """)

    @Test func httpRoutesReadWithTheirMatchesAndActions() throws {
        let reading = MeshConfigReader.read([("mesh.yaml", HTTPDocuments.mesh([Self.jason]))])
        let config = try #require(reading.config, "\(reading.problems)")
        let route = try #require(config.virtualServices.first?.http.first)
        #expect(route.name == "jason")
        #expect(route.timeout == .seconds(2))
        #expect(route.action == .route([.init(host: "payments.shop.svc.cluster.local", subset: "v2", port: nil, weight: 100)]))
        let match = try #require(route.matches.first)
        #expect(match.headers.map(\.name) == ["end-user", "x-canary"] && match.headers.first?.match == .exact("jason"))
        #expect(match.headers.last?.match == .regex(".*"), "{} is Istio's presence match")
        #expect(!reading.warnings.contains { $0.contains("gateways") }, "\(reading.warnings)")
        #expect(match.uri == .prefix("/v1") && match.ignoreURICase && match.port == 9080)
        #expect(route.headers?.request.overwrite.map(\.name) == ["x-a"])
        #expect(route.headers?.request.append.map(\.value) == ["2"])
        #expect(route.headers?.request.remove == ["x-c"])
        #expect(config.serviceEntries.first?.ports.first?.protocol == .http)
    }

    @Test(arguments: [
        ("  - route:\n    - {destination: {host: payments, subset: v1}, weight: 80}\n    - {destination: {host: payments, subset: v2}, weight: 10}",
         "spec.http[0].route: weights add up to 90, not 100"),
        ("  - route: [{destination: {host: payments, subset: v9}}]",
         "spec.http[0].route[0].destination.subset: no DestinationRule for payments.shop.svc.cluster.local defines subset \"v9\""),
        ("  - match: [{uri: {regex: \"/a(\"}}]\n    route: [{destination: {host: payments}}]",
         "spec.http[0].match[0].uri.regex: "),
        ("  - name: a\n    route: [{destination: {host: payments}}]\n  - name: a\n    match: [{uri: {exact: /}}]\n    route: [{destination: {host: payments}}]",
         "spec.http[1].name: route name \"a\" is used twice"),
        ("  - route: [{destination: {host: payments}}]\n    redirect: {uri: /x}",
         "spec.http[0]: has route and redirect: a route takes one of them"),
        ("  - match: [{queryParams: {q: {prefix: a}}}]\n    route: [{destination: {host: payments}}]",
         "spec.http[0].match[0].queryParams.q: prefix is not supported for query parameters (exact, regex), as in Istio"),
    ])
    func problemsNameTheField(routes: String, message: String) {
        let reading = MeshConfigReader.read([("mesh.yaml", HTTPDocuments.mesh([HTTPDocuments.virtualService(routes)]))])
        #expect(reading.config == nil)
        #expect(reading.problems.contains { $0.description.contains("VirtualService shop/payments: " + message) }, "\(reading.problems)")
    }

    @Test func fieldsNotActedOnAreWarningsNamingThem() throws {
        let routes = """
              - mirror: {host: payments, subset: v2}
                retries: {attempts: 3}
                match: [{uri: {prefix: /}, statPrefix: payments-root}]
                route: [{destination: {host: payments, subset: v1}}]
              - route: [{destination: {host: payments, subset: v2}}]
            """
        let reading = MeshConfigReader.read([("mesh.yaml", HTTPDocuments.mesh([HTTPDocuments.virtualService(routes)]))])
        #expect(reading.config != nil, "\(reading.problems)")
        for field in ["spec.http[0].match[0].statPrefix"] {
            #expect(reading.warnings.contains { $0.hasSuffix("VirtualService shop/payments: \(field): not supported by Capstan, ignored") }, "\(field): \(reading.warnings)")
        }
        #expect(reading.warnings.contains { $0.hasSuffix("spec.http[1...]: never applies: spec.http[0] takes every request before it") }, "\(reading.warnings)")
    }

    @Test func mirrorsBecomeEnvoysRequestMirrorPoliciesAsIstiodTranslatesThem() throws {
        let routes = """
              - match: [{uri: {prefix: /all}}]
                mirror: {host: payments, subset: v2}
                route: [{destination: {host: payments, subset: v1}}]
              - match: [{uri: {prefix: /some}}]
                mirror: {host: payments, subset: v2, port: {number: 9080}}
                mirrorPercentage: {value: 12.5}
                route: [{destination: {host: payments, subset: v1}}]
              - match: [{uri: {prefix: /old}}]
                mirror: {host: payments, subset: v2}
                mirrorPercent: 20
                route: [{destination: {host: payments, subset: v1}}]
              - match: [{uri: {prefix: /none}}]
                mirror: {host: payments, subset: v2}
                mirrorPercentage: {value: 0}
                route: [{destination: {host: payments, subset: v1}}]
              - mirrors:
                - {destination: {host: payments, subset: v2}, percentage: {value: 50}}
                - {destination: {host: payments}}
                - {destination: {host: payments, subset: v1}, percentage: {value: 0}}
                route: [{destination: {host: payments, subset: v1}}]
            """
        let reading = MeshConfigReader.read([("mesh.yaml", HTTPDocuments.mesh([HTTPDocuments.virtualService(routes)]))])
        let config = try #require(reading.config, "\(reading.problems)")
        #expect(!reading.warnings.contains { $0.contains("mirror") }, "\(reading.warnings)")
        let http = try #require(config.virtualServices.first?.http)
        let policies = http.map { route in
            HTTPRouteGenerator.routes(route, port: 9080, config: config)[0].route.requestMirrorPolicies
        }
        #expect(policies.map(\.count) == [1, 1, 1, 0, 2])
        #expect(policies[0][0].cluster == "outbound|9080|v2|payments.shop.svc.cluster.local")
        #expect(policies[0][0].runtimeFraction.defaultValue.numerator == 100 && policies[0][0].runtimeFraction.defaultValue.denominator == .hundred)
        #expect(policies[0][0].hasTraceSampled && policies[0][0].traceSampled.value == false)
        #expect(policies[1][0].runtimeFraction.defaultValue.numerator == 125_000 && policies[1][0].runtimeFraction.defaultValue.denominator == .million)
        #expect(policies[2][0].runtimeFraction.defaultValue.numerator == 20 && policies[2][0].runtimeFraction.defaultValue.denominator == .hundred)
        #expect(policies[4].map(\.cluster) == ["outbound|9080|v2|payments.shop.svc.cluster.local", "outbound|9080||payments.shop.svc.cluster.local"])
        #expect(policies[4][0].runtimeFraction.defaultValue.numerator == 500_000)
        #expect(policies[4][1].runtimeFraction.defaultValue.numerator == 100)
    }

    @Test(arguments: [
        ("  - mirror: {host: payments, subset: v9}\n    route: [{destination: {host: payments, subset: v1}}]",
         "spec.http[0].mirror.subset: no DestinationRule for payments.shop.svc.cluster.local defines subset \"v9\""),
        ("  - mirrors: [{destination: {host: payments}}, {destination: {host: nowhere}}]\n    route: [{destination: {host: payments}}]",
         "spec.http[0].mirrors[1].destination.host: nowhere.shop.svc.cluster.local is not defined by any ServiceEntry"),
        ("  - mirror: {host: payments}\n    mirrorPercentage: {value: 101}\n    route: [{destination: {host: payments}}]",
         "spec.http[0].mirrorPercentage.value: 101.0 is out of range 0-100"),
        ("  - mirrors: [{destination: {host: payments}, percentage: {value: -1}}]\n    route: [{destination: {host: payments}}]",
         "spec.http[0].mirrors[0].percentage.value: -1.0 is out of range 0-100"),
        ("  - mirror: {host: payments}\n    mirrors: [{destination: {host: payments}}]\n    route: [{destination: {host: payments}}]",
         "spec.http[0].mirrors: cannot be given with mirror"),
        ("  - mirrorPercentage: {value: 5}\n    route: [{destination: {host: payments}}]",
         "spec.http[0].mirrorPercentage: needs mirror"),
        ("  - mirror: {host: payments}\n    redirect: {uri: /x}",
         "spec.http[0]: mirrors copies of requests sent to route destinations"),
    ])
    func mirrorProblemsNameTheField(routes: String, message: String) {
        let reading = MeshConfigReader.read([("mesh.yaml", HTTPDocuments.mesh([HTTPDocuments.virtualService(routes)]))])
        #expect(reading.config == nil)
        #expect(reading.problems.contains { $0.description.contains("VirtualService shop/payments: " + message) }, "\(reading.problems)")
    }

    @Test func retriesBecomeEnvoysRetryPolicyAsIstiodConvertsThem() throws {
        let routes = """
              - match: [{uri: {prefix: /pay}}]
                retries: {attempts: 3, perTryTimeout: 2s, retryOn: "gateway-error,connect-failure,409"}
                route: [{destination: {host: payments, subset: v1}}]
              - match: [{uri: {prefix: /once}}]
                retries: {attempts: 0}
                route: [{destination: {host: payments, subset: v1}}]
              - route: [{destination: {host: payments, subset: v2}}]
            """
        let reading = MeshConfigReader.read([("mesh.yaml", HTTPDocuments.mesh([HTTPDocuments.virtualService(routes)]))])
        let config = try #require(reading.config, "\(reading.problems)")
        let http = try #require(config.virtualServices.first?.http)
        let custom = try #require(HTTPRouteGenerator.retryPolicy(http[0].retries))
        #expect(custom.retryOn == "gateway-error,connect-failure,retriable-status-codes")
        #expect(custom.retriableStatusCodes == [409])
        #expect(custom.numRetries.value == 3)
        #expect(custom.perTryTimeout.seconds == 2)
        #expect(custom.retryHostPredicate.map(\.name) == ["envoy.retry_host_predicates.previous_hosts"])
        #expect(HTTPRouteGenerator.retryPolicy(http[1].retries) == nil, "attempts 0: no retries")
        #expect(HTTPRouteGenerator.retryPolicy(http[2].retries) == HTTPRouteGenerator.defaultRetryPolicy, "Istio's default")
        let bad = MeshConfigReader.read([("mesh.yaml", HTTPDocuments.mesh([HTTPDocuments.virtualService(
            "  - retries: {attempts: 2, retryOn: \"5xx,sometimes\"}\n    route: [{destination: {host: payments}}]")]))])
        #expect(bad.problems.contains { $0.description.contains("spec.http[0].retries.retryOn: \"sometimes\" is neither") }, "\(bad.problems)")
    }

    /// istiod's `ConvertPolicy`: `retryRemoteLocalities: true` adds `retry_priority`
    /// `envoy.retry_priorities.previous_priorities` with `PreviousPrioritiesConfig{update_frequency: 2}` to
    /// the policy it would make anyway; false or absent adds nothing. No warning either way.
    @Test func retryRemoteLocalitiesBecomesPreviousPrioritiesAsIstiodConvertsIt() throws {
        let routes = """
              - match: [{uri: {prefix: /remote}}]
                retries: {attempts: 3, retryRemoteLocalities: true}
                route: [{destination: {host: payments, subset: v1}}]
              - match: [{uri: {prefix: /local}}]
                retries: {attempts: 3, retryRemoteLocalities: false}
                route: [{destination: {host: payments, subset: v1}}]
            """
        let reading = MeshConfigReader.read([("mesh.yaml", HTTPDocuments.mesh([HTTPDocuments.virtualService(routes)]))])
        let config = try #require(reading.config, "\(reading.problems)")
        #expect(!reading.warnings.contains { $0.contains("retryRemoteLocalities") }, "\(reading.warnings)")
        let http = try #require(config.virtualServices.first?.http)
        #expect(http.map { $0.retries?.retryRemoteLocalities } == [true, false])
        let remote = try #require(HTTPRouteGenerator.retryPolicy(http[0].retries))
        #expect(remote.hasRetryPriority)
        #expect(remote.retryPriority.name == "envoy.retry_priorities.previous_priorities")
        #expect(remote.retryPriority.typedConfig.typeURL
                == "type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig")
        let priorities = try Envoy_Extensions_Retry_Priority_PreviousPriorities_V3_PreviousPrioritiesConfig(unpackingAny: remote.retryPriority.typedConfig)
        #expect(priorities.updateFrequency == 2)
        // The rest is the policy istiod makes without the flag.
        var rest = remote
        rest.clearRetryPriority()
        let local = try #require(HTTPRouteGenerator.retryPolicy(http[1].retries))
        #expect(rest == local && !local.hasRetryPriority)
        #expect(remote.numRetries.value == 3 && remote.retryHostPredicate.map(\.name) == ["envoy.retry_host_predicates.previous_hosts"])
        let bad = MeshConfigReader.read([("mesh.yaml", HTTPDocuments.mesh([HTTPDocuments.virtualService(
            "  - retries: {attempts: 2, retryRemoteLocalities: sometimes}\n    route: [{destination: {host: payments}}]")]))])
        #expect(bad.problems.contains { $0.description.contains("spec.http[0].retries.retryRemoteLocalities") }, "\(bad.problems)")
    }

    @Test func faultsBecomeEnvoysFaultFilterConfigurationAsIstiodTranslatesThem() throws {
        let routes = """
              - match: [{uri: {prefix: /slow}}]
                fault: {delay: {fixedDelay: 300ms, percentage: {value: 12.5}}, abort: {httpStatus: 503, percentage: {value: 50}}}
                route: [{destination: {host: payments, subset: v1}}]
              - match: [{uri: {prefix: /old}}]
                fault: {delay: {fixedDelay: 1s, percent: 20}, abort: {grpcStatus: UNAVAILABLE}}
                route: [{destination: {host: payments, subset: v1}}]
              - route: [{destination: {host: payments, subset: v2}}]
            """
        let reading = MeshConfigReader.read([("mesh.yaml", HTTPDocuments.mesh([HTTPDocuments.virtualService(routes)]))])
        let config = try #require(reading.config, "\(reading.problems)")
        let http = try #require(config.virtualServices.first?.http)
        #expect(http[2].fault == nil)
        let first = HTTPRouteGenerator.faultConfig(try #require(http[0].fault))
        #expect(first.delay.fixedDelay.nanos == 300_000_000)
        #expect(first.delay.percentage.numerator == 125_000 && first.delay.percentage.denominator == .million)
        #expect(first.abort.httpStatus == 503)
        #expect(first.abort.percentage.numerator == 500_000 && first.abort.percentage.denominator == .million)
        // The deprecated integer percent, of a hundred; an abort without a percentage has none (0 % in Envoy).
        let second = HTTPRouteGenerator.faultConfig(try #require(http[1].fault))
        #expect(second.delay.percentage.numerator == 20 && second.delay.percentage.denominator == .hundred)
        #expect(second.abort.grpcStatus == 14 && !second.abort.hasPercentage)
        // On the route, under the filter's name.
        let generated = HTTPRouteGenerator.routes(http[0], port: 9080, config: config)
        let any = try #require(generated.first?.typedPerFilterConfig["envoy.filters.http.fault"])
        #expect(any.typeURL == "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault")
        #expect(HTTPRouteGenerator.routes(http[2], port: 9080, config: config).first?.typedPerFilterConfig.isEmpty == true)
    }

    @Test(arguments: [
        ("fault: {abort: {httpStatus: 600, percentage: {value: 10}}}", "spec.http[0].fault.abort.httpStatus: 600 is out of range 200-599"),
        ("fault: {abort: {httpStatus: 503, percentage: {value: 100.5}}}", "spec.http[0].fault.abort.percentage.value: 100.5 is out of range 0-100"),
        ("fault: {abort: {grpcStatus: SOMETIMES}}", "spec.http[0].fault.abort.grpcStatus: \"SOMETIMES\" is not a gRPC status code name"),
        ("fault: {abort: {percentage: {value: 10}}}", "spec.http[0].fault.abort: needs httpStatus or grpcStatus"),
        ("fault: {delay: {fixedDelay: 0s}}", "spec.http[0].fault.delay.fixedDelay: must be at least 1ms"),
        ("fault: {delay: {fixedDelay: 1s, percent: 101}}", "spec.http[0].fault.delay.percent: 101 is out of range 0-100"),
        ("fault: {delay: {exponentialDelay: 1s}}", "spec.http[0].fault.delay.exponentialDelay: is not supported"),
        ("fault: {}", "spec.http[0].fault: needs delay or abort"),
    ])
    func faultProblemsNameTheField(fault: String, message: String) {
        let reading = MeshConfigReader.read([("mesh.yaml", HTTPDocuments.mesh([HTTPDocuments.virtualService(
            "  - \(fault)\n    route: [{destination: {host: payments}}]")]))])
        #expect(reading.config == nil)
        #expect(reading.problems.contains { $0.description.contains("mesh.yaml") && $0.description.contains("VirtualService shop/payments: " + message) },
                "\(reading.problems)")
    }

    /// `corsPolicy` as istiod's `TranslateCORSPolicy` writes it, on the route under the filter's name.
    @Test func corsPoliciesBecomeEnvoysAsIstiodTranslatesThem() throws {
        let routes = """
              - match: [{uri: {prefix: /api}}]
                corsPolicy:
                  allowOrigins: [{exact: "https://shop.example"}, {prefix: "https://dev."}, {regex: "https://.*[.]test"}]
                  allowMethods: [GET, POST]
                  allowHeaders: [x-user, authorization]
                  exposeHeaders: [x-trace]
                  maxAge: 24h
                  allowCredentials: false
                  unmatchedPreflights: IGNORE
                route: [{destination: {host: payments, subset: v1}}]
              - corsPolicy: {allowOrigin: ["https://old.example"]}
                route: [{destination: {host: payments, subset: v2}}]
            """
        let reading = MeshConfigReader.read([("mesh.yaml", HTTPDocuments.mesh([HTTPDocuments.virtualService(routes)]))])
        let config = try #require(reading.config, "\(reading.problems)")
        let http = try #require(config.virtualServices.first?.http)
        let first = HTTPRouteGenerator.corsConfig(try #require(http[0].cors))
        #expect(first.allowOriginStringMatch.map(\.exact) == ["https://shop.example", "", ""])
        #expect(first.allowOriginStringMatch[1].prefix == "https://dev." && first.allowOriginStringMatch[2].safeRegex.regex == "https://.*[.]test")
        #expect(first.allowMethods == "GET,POST" && first.allowHeaders == "x-user,authorization" && first.exposeHeaders == "x-trace")
        #expect(first.maxAge == "86400")
        #expect(first.hasAllowCredentials && !first.allowCredentials.value)
        #expect(first.hasForwardNotMatchingPreflights && !first.forwardNotMatchingPreflights.value)
        #expect(first.filterEnabled.defaultValue.numerator == 100 && first.filterEnabled.defaultValue.denominator == .hundred)
        // The deprecated allowOrigin: exact matches (with a warning); unset fields stay unset, preflights forwarded.
        let second = HTTPRouteGenerator.corsConfig(try #require(http[1].cors))
        #expect(second.allowOriginStringMatch.map(\.exact) == ["https://old.example"])
        #expect(!second.hasAllowCredentials && second.maxAge.isEmpty && second.forwardNotMatchingPreflights.value)
        #expect(reading.warnings.contains { $0.contains("spec.http[1].corsPolicy.allowOrigin: deprecated") }, "\(reading.warnings)")
        let generated = HTTPRouteGenerator.routes(http[0], port: 9080, config: config)
        let any = try #require(generated.first?.typedPerFilterConfig["envoy.filters.http.cors"])
        #expect(any.typeURL == "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy")
    }

    @Test(arguments: [
        ("corsPolicy: {allowMethods: [FETCH]}", "spec.http[0].corsPolicy.allowMethods[0]: \"FETCH\" is not an HTTP method"),
        ("corsPolicy: {allowHeaders: [\"x user\"]}", "spec.http[0].corsPolicy.allowHeaders[0]: \"x user\" is not a header name"),
        ("corsPolicy: {maxAge: 0s}", "spec.http[0].corsPolicy.maxAge: must be at least 1ms"),
        ("corsPolicy: {allowOrigins: [{regex: \"(\"}]}", "spec.http[0].corsPolicy.allowOrigins[0].regex"),
        ("corsPolicy: {unmatchedPreflights: DROP}", "spec.http[0].corsPolicy.unmatchedPreflights: \"DROP\" is not UNSPECIFIED, FORWARD or IGNORE"),
    ])
    func corsProblemsNameTheField(cors: String, message: String) {
        let reading = MeshConfigReader.read([("mesh.yaml", HTTPDocuments.mesh([HTTPDocuments.virtualService(
            "  - \(cors)\n    route: [{destination: {host: payments}}]")]))])
        #expect(reading.config == nil)
        #expect(reading.problems.contains { $0.description.contains("VirtualService shop/payments: " + message) }, "\(reading.problems)")
    }

    @Test func routesOfTheWrongKindForAHostsPortsAreWarnings() throws {
        // TCP routes for payments, whose only port is now HTTP; http routes for ledger, whose only port is TCP.
        let tcp = Documents.virtualService(90, 10)
        let ledger = """
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: ledger, namespace: billing}
            spec:
              hosts: [ledger]
              http: [{route: [{destination: {host: ledger}}]}]
            """
        let reading = MeshConfigReader.read([("mesh.yaml", HTTPDocuments.mesh([tcp, ledger.replacingOccurrences(of: "ledger]", with: "ledger.billing.svc.cluster.local]")]))])
        #expect(reading.config != nil, "\(reading.problems)")
        #expect(reading.warnings.contains { $0.hasSuffix("VirtualService shop/payments: spec.tcp[0]: applies to no port: the ports it would take are HTTP, which http routes route") }, "\(reading.warnings)")
        let tcpLedger = HTTPDocuments.mesh([ledger]).replacingOccurrences(of: "name: api, protocol: GRPC", with: "name: tcp-api")
        let second = MeshConfigReader.read([("mesh.yaml", tcpLedger)])
        #expect(second.warnings.contains { $0.contains("VirtualService billing/ledger: spec.http: applies to no port") }, "\(second.warnings)")
    }
}
