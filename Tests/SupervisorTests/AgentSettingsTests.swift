import Identity
import Supervisor
import Testing
import XDS

/// `capstan agent`'s settings from Istio's environment names, and the refusals naming variable and value.
@Suite struct AgentSettingsTests {
    static let minimal = ["POD_NAME": "reviews-v1-7d9f", "POD_NAMESPACE": "bookinfo", "INSTANCE_IP": "10.1.2.3"]

    static func settings(_ extra: [String: String], removing: [String] = []) throws(AgentSettingsError) -> AgentSettings {
        var environment = minimal.merging(extra) { $1 }
        for name in removing { environment[name] = nil }
        return try AgentSettings(environment: environment)
    }

    @Test func defaultsAreIstios() throws {
        let settings = try Self.settings([:])
        #expect(settings.podName == "reviews-v1-7d9f")
        #expect(settings.podNamespace == "bookinfo")
        #expect(settings.instanceIPs == ["10.1.2.3"])
        #expect(settings.serviceAccount == "default")
        #expect(settings.trustDomain == "cluster.local")
        #expect(settings.identity.spiffeID == "spiffe://cluster.local/ns/bookinfo/sa/default")
        #expect(settings.nodeID.description == "sidecar~10.1.2.3~reviews-v1-7d9f.bookinfo~bookinfo.svc.cluster.local")
        #expect(settings.discoveryAddress == .tcp(host: "istiod.istio-system.svc", port: 15012))
        #expect(settings.caAddress == settings.discoveryAddress)
        #expect(settings.secretTTL == .seconds(86_400))
        #expect(settings.secretGracePeriodRatio == 0.5)
        #expect(settings.outputCertsDirectory == nil)
        #expect(settings.keyAlgorithm == .ecdsaP256)
        #expect(settings.tokenPath == "/var/run/secrets/tokens/istio-token")
        #expect(settings.xdsRootCertPath == "/var/run/secrets/istio/root-cert.pem")
        #expect(settings.caRootCertPath == "/var/run/secrets/istio/root-cert.pem")
        #expect(settings.plaintextControlPlane == false)
        #expect(settings.minimumDrainDuration == .seconds(5))
        #expect(settings.terminationDrainDuration == .seconds(5))
        #expect((settings.statusPort, settings.readinessPort, settings.proxyAdminPort, settings.proxyStatsPort) == (15020, 15021, 15000, 15090))
        #expect(settings.statusBindAddress == "0.0.0.0")
        #expect(settings.xdsSocketPath == "/etc/istio/proxy/XDS")
        #expect(settings.sdsSocketPath == "/etc/istio/proxy/SDS")
        #expect((settings.proxyUID, settings.proxyGID) == (1337, 1337))
        #expect(settings.clusterID == "Kubernetes")
        #expect(settings.nodeMetadata.isEmpty)
        #expect(settings.serviceCluster == "istio-proxy")
        #expect(settings.proxyDrainDuration == .seconds(45))
        #expect(settings.warnings.isEmpty)
    }

    @Test func readsIstiosNamesAndProxyConfig() throws {
        let settings = try Self.settings([
            "INSTANCE_IP": "10.1.2.3,fd00::3",
            "SERVICE_ACCOUNT": "bookinfo-reviews",
            "TRUST_DOMAIN": "example.org",
            "CA_ADDR": "ca.example.org:15443",
            "PROXY_CONFIG": #"{"discoveryAddress":"istiod.mesh.svc:15012","terminationDrainDuration":"12s","drainDuration":"20s","serviceCluster":"reviews.bookinfo","concurrency":4,"tracing":{},"proxyMetadata":{"ISTIO_META_DNS_CAPTURE":"true","SECRET_TTL":"2h"}}"#,
            "SECRET_TTL": "1h30m",
            "SECRET_GRACE_PERIOD_RATIO": "0.25",
            "OUTPUT_CERTS": "/etc/certs-out",
            "MINIMUM_DRAIN_DURATION": "1.5s",
            "ECC_SIGNATURE_ALGORITHM": "RSA",
            "WORKLOAD_RSA_KEY_SIZE": "3072",
            "ISTIO_META_INTERCEPTION_MODE": "TPROXY",
            "ISTIO_META_CLUSTER_ID": "east",
            "JWT_POLICY": "first-party-jwt",
            "XDS_ROOT_CA": "/etc/mesh/root.pem",
            "CAPSTAN_PLAINTEXT_CONTROL_PLANE": "true",
            "PROXY_UID": "2000",
        ])
        #expect(settings.instanceIPs == ["10.1.2.3", "fd00::3"])
        #expect(settings.nodeID.description == "sidecar~10.1.2.3~reviews-v1-7d9f.bookinfo~bookinfo.svc.cluster.local")
        #expect(settings.identity.spiffeID == "spiffe://example.org/ns/bookinfo/sa/bookinfo-reviews")
        #expect(settings.discoveryAddress == .tcp(host: "istiod.mesh.svc", port: 15012))
        #expect(settings.caAddress == .tcp(host: "ca.example.org", port: 15443))
        // The environment wins over proxyMetadata; proxyMetadata fills what the environment lacks.
        #expect(settings.secretTTL == .seconds(5400))
        #expect(settings.nodeMetadata == ["INTERCEPTION_MODE": "TPROXY", "CLUSTER_ID": "east", "DNS_CAPTURE": "true"])
        #expect(settings.clusterID == "east")
        #expect(settings.secretGracePeriodRatio == 0.25)
        #expect(settings.outputCertsDirectory == "/etc/certs-out")
        #expect(settings.minimumDrainDuration == .milliseconds(1500))
        #expect(settings.terminationDrainDuration == .seconds(12))
        #expect(settings.proxyDrainDuration == .seconds(20))
        #expect(settings.keyAlgorithm == .rsa(bits: 3072))
        #expect(settings.tokenPath == "/var/run/secrets/kubernetes.io/serviceaccount/token")
        #expect(settings.xdsRootCertPath == "/etc/mesh/root.pem")
        #expect(settings.caRootCertPath == "/etc/mesh/root.pem")
        #expect(settings.plaintextControlPlane)
        #expect(settings.serviceCluster == "reviews.bookinfo")
        #expect(settings.proxyConcurrency == 4)
        #expect(settings.proxyUID == 2000)
        #expect(settings.warnings == ["PROXY_CONFIG.tracing: not used by capstan agent, ignored"])
    }

    @Test func terminationDrainSecondsWinsOverProxyConfigAndYAMLIsRead() throws {
        let settings = try Self.settings([
            "TERMINATION_DRAIN_DURATION_SECONDS": "30",
            "PROXY_CONFIG": "discoveryAddress: istiod.mesh.svc:15012\nterminationDrainDuration: 12s\nstatusPort: 16020\n",
        ])
        #expect(settings.terminationDrainDuration == .seconds(30))
        #expect(settings.discoveryAddress == .tcp(host: "istiod.mesh.svc", port: 15012))
        #expect(settings.statusPort == 16020)
    }

    @Test func anIPv6OnlyPodListensOnIPv6() throws {
        let settings = try Self.settings(["INSTANCE_IP": "fd00::3"])
        #expect(settings.statusBindAddress == "::")
        #expect(settings.nodeID.description == "sidecar~fd00::3~reviews-v1-7d9f.bookinfo~bookinfo.svc.cluster.local")
    }

    @Test(arguments: [
        (["SECRET_GRACE_PERIOD_RATIO": "1.5"], #"SECRET_GRACE_PERIOD_RATIO "1.5": must be between 0 and 1"#),
        (["SECRET_GRACE_PERIOD_RATIO": "0"], #"SECRET_GRACE_PERIOD_RATIO "0": must be between 0 and 1"#),
        (["SECRET_TTL": "forever"], #"SECRET_TTL "forever": not a duration such as "5s", "1m30s" or "24h""#),
        (["SECRET_TTL": "0s"], #"SECRET_TTL "0s": must be longer than 0"#),
        (["MINIMUM_DRAIN_DURATION": "5"], #"MINIMUM_DRAIN_DURATION "5": not a duration such as "5s", "1m30s" or "24h""#),
        (["MINIMUM_DRAIN_DURATION": "-1s"], #"MINIMUM_DRAIN_DURATION "-1s": not a duration such as "5s", "1m30s" or "24h""#),
        (["TERMINATION_DRAIN_DURATION_SECONDS": "5s"], #"TERMINATION_DRAIN_DURATION_SECONDS "5s": must be whole seconds, 0-86400"#),
        (["INSTANCE_IP": "10.1.2.300"], #"INSTANCE_IP "10.1.2.300": "10.1.2.300" is not an IPv4 or IPv6 address"#),
        (["INSTANCE_IP": "10.1.2.3,"], #"INSTANCE_IP "10.1.2.3,": "" is not an IPv4 or IPv6 address"#),
        (["POD_NAMESPACE": "Book_Info"], #"POD_NAMESPACE "Book_Info": not a Kubernetes name (lower-case letters, digits, '-'; at most 63)"#),
        (["POD_NAME": "a~b"], #"POD_NAME "a~b": not a Kubernetes name (lower-case letters, digits, '-', '.'; at most 253)"#),
        (["CA_ADDR": "istiod"], #"CA_ADDR "istiod": expected HOST:PORT with a port 1-65535, or unix:///PATH"#),
        (["PROXY_CONFIG": #"{"discoveryAddress": "istiod:0"}"#], #"PROXY_CONFIG.discoveryAddress "istiod:0": expected HOST:PORT with a port 1-65535, or unix:///PATH"#),
        (["PROXY_CONFIG": #"{"terminationDrainDuration": "soon"}"#], #"PROXY_CONFIG.terminationDrainDuration "soon": "soon" is not a duration such as "10s" or "500ms""#),
        (["PROXY_CONFIG": "[1, 2]"], #"PROXY_CONFIG "[1,2]": expected an object, found a list"#),
        (["ECC_SIGNATURE_ALGORITHM": "DSA"], #"ECC_SIGNATURE_ALGORITHM "DSA": must be ECDSA or RSA"#),
        (["ECC_SIGNATURE_ALGORITHM": "RSA", "WORKLOAD_RSA_KEY_SIZE": "1024"], #"WORKLOAD_RSA_KEY_SIZE "1024": must be 2048-4096 bits, a multiple of 128"#),
        (["JWT_POLICY": "none"], #"JWT_POLICY "none": must be third-party-jwt or first-party-jwt"#),
        (["CAPSTAN_PLAINTEXT_CONTROL_PLANE": "yes please"], #"CAPSTAN_PLAINTEXT_CONTROL_PLANE "yes please": must be true or false"#),
        (["PROXY_UID": "root"], #"PROXY_UID "root": not a numeric user or group id"#),
        (["XDS_ROOT_CA": "root.pem"], #"XDS_ROOT_CA "root.pem": must be an absolute path (or start with ./)"#),
    ])
    func refusesBadValuesNamingVariableAndValue(environment: [String: String], message: String) {
        #expect(throws: AgentSettingsError.self) { try Self.settings(environment) }
        do {
            _ = try Self.settings(environment)
        } catch {
            #expect(error.description == message)
        }
    }

    @Test func refusesMissingPodFacts() {
        for name in ["POD_NAME", "POD_NAMESPACE", "INSTANCE_IP"] {
            do {
                _ = try Self.settings([:], removing: [name])
                Issue.record("\(name) missing was accepted")
            } catch {
                #expect(error.variable == name)
                #expect(error.value == nil)
                #expect(error.description.hasPrefix("\(name) is not set: needed: "))
            }
        }
    }

    @Test func refusesTrustDomainsASPIFFEIDCannotHold() {
        do {
            _ = try Self.settings(["TRUST_DOMAIN": "cluster local"])
            Issue.record("accepted")
        } catch {
            #expect(error.variable == "TRUST_DOMAIN")
            #expect(error.value == "cluster local")
        }
    }

    @Test func validateChecksOverrides() throws {
        var settings = try Self.settings([:])
        settings.readinessPort = settings.statusPort
        #expect(throws: AgentSettingsError(variable: "readiness port", value: "15020", reason: "the status port uses it too")) {
            try settings.validate()
        }
        settings.readinessPort = 15021
        settings.socketDirectory = "/" + String(repeating: "d", count: 110)
        #expect(throws: AgentSettingsError.self) { try settings.validate() }
        settings.socketDirectory = "/tmp/capstan"
        settings.statusBindAddress = "localhost"
        #expect(throws: AgentSettingsError(variable: "status bind address", value: "localhost", reason: "not an IP address")) {
            try settings.validate()
        }
        settings.statusBindAddress = "127.0.0.1"
        try settings.validate()
        #expect(settings.sdsSocketPath == "/tmp/capstan/SDS")
    }

    @Test(arguments: [("24h", 86_400_000), ("1m30s", 90_000), ("500ms", 500), ("1.5h", 5_400_000), ("2h45m10.5s", 9_910_500)])
    func goDurationsAsIstioWritesThem(text: String, milliseconds: Int64) throws {
        let settings = try Self.settings(["SECRET_TTL": text])
        #expect(settings.secretTTL == .milliseconds(milliseconds))
    }
}
