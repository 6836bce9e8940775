// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "capstan",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "capstan", targets: ["CapstanCLI"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.80.0"),
        .package(url: "https://github.com/apple/swift-atomics.git", from: "1.2.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.30.0"),
        // No default traits: BinaryDelimitedStreams imports Foundation (and with it ICU) into the binary.
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0", traits: []),
        .package(url: "https://github.com/grpc/grpc-swift-2.git", from: "2.0.0"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf.git", from: "2.0.0"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport.git", from: "2.0.0"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.10.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.0.0"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.3.0"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.0.0"),
        .package(url: "https://github.com/apple/swift-nio-http2.git", from: "1.35.0"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.24.0"),
    ],
    targets: [
        // libnftables (ruleset transactions), loaded on first use: only init and the node agent need it
        // (header from libnftables-dev at build time; libnftables1 at run time).
        .target(name: "CNFTables"),
        // libmnl (rtnetlink).
        .systemLibrary(name: "CMNL", pkgConfig: "libmnl",
                       providers: [.apt(["libmnl-dev"])]),
        // libyaml: the YAML parser (the one Yams wraps), without Foundation in the binary.
        .systemLibrary(name: "CYAML", pkgConfig: "yaml-0.1",
                       providers: [.apt(["libyaml-dev"])]),

        // Kernel plumbing: nftables transactions, rtnetlink policy routing, network namespaces.
        .target(name: "Netfilter", dependencies: ["CNFTables", "CMNL"]),

        // What to capture and how: CaptureSpec, ruleset rendering, read-back, drift, packet trace.
        .target(name: "Capture", dependencies: ["Netfilter", "DNS"]),

        // DNS: the wire format as values (no NIO in the codec), resolv.conf, a stub resolver over UDP and TCP,
        // and the name table the agent's DNS proxy answers from. Imported by the agent and the proxy alike.
        .target(
            name: "DNS",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Atomics", package: "swift-atomics"),
            ]
        ),

        // Configuration documents (JSON and YAML) read with the field path in every error.
        .target(name: "Configuration", dependencies: ["CYAML"]),

        // Envoy's xDS v3 subset (generated from proto/ by hack/generate-protos.sh, committed) and ADS.
        .target(
            name: "XDS",
            dependencies: [
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),

        // Workload identity: keys, CSRs with SPIFFE URI SANs, the CA (both sides), certificates, SDS.
        .target(
            name: "Identity",
            dependencies: [
                "XDS",
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),

        // `capstan control-plane`: Istio-style YAML in a directory → per-proxy xDS snapshots over ADS.
        .target(
            name: "ControlPlane",
            dependencies: [
                "XDS", "Configuration", "Identity", "Routing", "CAllocator",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),

        // RE2's C++ API behind a C face: Envoy's safe_regex has RE2's syntax and semantics (libre2-dev).
        .target(name: "CRE2", linkerSettings: [.linkedLibrary("re2")]),

        // Envoy's route configuration as immutable values: virtual hosts by authority, routes in order,
        // header/query/regex matchers, weighted choice. No NIO: asked "where does this request go".
        .target(
            name: "Routing",
            dependencies: [
                "XDS", "Configuration", "CRE2",
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ]
        ),

        // Envoy's role-based access control as immutable values: policies of permissions (what is asked)
        // and principals (who asks), checked against a connection or a request. No NIO.
        .target(
            name: "Authorization",
            dependencies: [
                "XDS", "Configuration", "Routing",
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ]
        ),

        // Envoy's HTTP connection manager: HTTP/1.1 and HTTP/2 downstreams as one request type, the HTTP
        // filters in order, the router, and upstream connection pools per cluster and event loop.
        .target(
            name: "HTTPProxy",
            dependencies: [
                "Routing", "Authorization", "Configuration", "XDS",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
                .product(name: "NIOHTTPTypesHTTP2", package: "swift-nio-extras"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
            ]
        ),

        // Small HTTP/1.1 servers for admin, health and metrics endpoints, and the one-shot client that asks them.
        .target(
            name: "HTTPEndpoints",
            dependencies: [
                "Configuration",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),

        // Node mode: the CNI plugin protocol, the node agent daemon and its repair loop.
        .target(
            name: "NodeAgent",
            dependencies: [
                "Capture", "Netfilter", "Configuration", "HTTPEndpoints",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),

        // Dropping to the proxy's uid/gid with only the capability TPROXY needs.
        .target(name: "CProcessIdentity"),

        // Closing the agent's descriptors in the proxy child (glibc's posix_spawn close-from action).
        .target(name: "CProcessSpawn"),

        // glibc's allocator settings: the control plane's large, short-lived response buffers.
        .target(name: "CAllocator"),

        // The packaged proxy: capture listeners, original destination, TCP relay, admin API, stats, drain.
        .target(
            name: "DataPlane",
            dependencies: [
                "DNS",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Logging", package: "swift-log"),
                "CProcessIdentity", "Configuration", "HTTPEndpoints", "XDS", "Identity", "Routing", "Authorization", "HTTPProxy",
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
            ]
        ),

        // `capstan agent`: the proxy child's lifecycle, readiness, drain, status server, xDS relay, SDS.
        .target(
            name: "Supervisor",
            dependencies: [
                "Identity", "XDS", "HTTPEndpoints", "Configuration", "CProcessSpawn", "DNS",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),

        // The `capstan` executable: argument parsing and wiring only.
        .executableTarget(
            name: "CapstanCLI",
            dependencies: [
                "Capture", "Netfilter", "DataPlane", "NodeAgent", "ControlPlane", "XDS", "Identity", "Supervisor", "HTTPEndpoints", "DNS",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            // Every capstan process (init, agent, proxy) maps the whole executable. Linked by lld with packed
            // relative relocations and no exported symbols, the loader reads 50 KB at start instead of 4.7 MB
            // of relocations and symbol tables (README, "Agent memory"), and the link is faster too.
            linkerSettings: [
                .unsafeFlags(["-use-ld=lld", "-Xlinker", "--no-export-dynamic", "-Xlinker", "-z", "-Xlinker", "pack-relative-relocs"],
                             .when(platforms: [.linux])),
                // A release binary keeps its symbol table (crash backtraces name functions) but not its DWARF
                // debug information, more than half of its size (README, "Binary and image").
                .unsafeFlags(["-Xlinker", "--strip-debug"], .when(platforms: [.linux], configuration: .release)),
            ]
        ),

        // Benchmarks of the capture engine in-process (run by hack/bench-init.sh).
        .executableTarget(name: "CaptureBenchmarks", dependencies: ["Capture", "Netfilter"],
                          path: "Benchmarks/CaptureBenchmarks"),

        // Benchmarks of node mode: the CNI plugin chain and repair (run by hack/bench-node.sh).
        .executableTarget(name: "NodeBenchmarks", dependencies: ["CapstanTestSupport", "Capture", "Netfilter"],
                          path: "Benchmarks/NodeBenchmarks"),

        // Benchmarks of the control plane: change propagation, and 500 ADS streams (hack/bench-control-plane.sh).
        .executableTarget(name: "ControlPlaneBenchmarks",
                          dependencies: ["CapstanTestSupport", "Netfilter", "XDS", .product(name: "Logging", package: "swift-log")],
                          path: "Benchmarks/ControlPlaneBenchmarks"),

        // Benchmarks of the agent: start to ready, memory, mTLS latency of two sidecars (hack/bench-agent.sh).
        .executableTarget(name: "AgentBenchmarks", dependencies: ["CapstanTestSupport", "Netfilter"],
                          path: "Benchmarks/AgentBenchmarks"),

        // The agent's DNS proxy alone with a generated name table, loaded by hack/bench-dns.sh.
        .executableTarget(name: "DNSBenchmarks", dependencies: ["DNS"], path: "Benchmarks/DNSBenchmarks"),

        // Test helpers shared by test targets: throw-away network namespaces and probe sockets.
        .target(
            name: "CapstanTestSupport",
            dependencies: ["Netfilter", "CMNL", "Configuration", "NodeAgent", .product(name: "NIOPosix", package: "swift-nio"),
                           .product(name: "NIOConcurrencyHelpers", package: "swift-nio")],
            path: "Tests/CapstanTestSupport"
        ),

        .testTarget(name: "CaptureTests", dependencies: ["Capture", "CapstanTestSupport"]),
        .testTarget(name: "DNSTests", dependencies: ["DNS",
                                                     .product(name: "NIOCore", package: "swift-nio"),
                                                     .product(name: "NIOEmbedded", package: "swift-nio"),
                                                     .product(name: "NIOPosix", package: "swift-nio")]),
        .testTarget(name: "DataPlaneTests", dependencies: ["DataPlane", "Configuration", "XDS", "Identity", "HTTPProxy", "Routing", "Authorization",
                                                           .product(name: "HTTPTypes", package: "swift-http-types"),
                                                           .product(name: "NIOCore", package: "swift-nio"),
                                                           .product(name: "NIOPosix", package: "swift-nio"),
                                                           .product(name: "NIOSSL", package: "swift-nio-ssl"),
                                                           .product(name: "Logging", package: "swift-log")]),
        .testTarget(name: "NodeAgentTests",
                    dependencies: ["NodeAgent", "Configuration", "Capture", "Netfilter", "CapstanTestSupport",
                                   .product(name: "NIOSSL", package: "swift-nio-ssl"),
                                   .product(name: "NIOHTTP1", package: "swift-nio")]),
        .testTarget(name: "XDSTests", dependencies: ["XDS", "CapstanTestSupport",
                                                     .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                                                     .product(name: "Logging", package: "swift-log")]),
        .testTarget(name: "ControlPlaneTests", dependencies: ["ControlPlane", "XDS", "Configuration", "DataPlane", "Routing",
                                                            .product(name: "HTTPTypes", package: "swift-http-types"),
                                                            .product(name: "NIOCore", package: "swift-nio")]),
        .testTarget(name: "IdentityTests", dependencies: ["Identity", "XDS",
                                                          .product(name: "X509", package: "swift-certificates"),
                                                          .product(name: "Crypto", package: "swift-crypto")]),
        .testTarget(name: "SupervisorTests", dependencies: ["Supervisor", "Identity", "XDS", "CapstanTestSupport",
                                                            .product(name: "NIOCore", package: "swift-nio"),
                                                            .product(name: "NIOPosix", package: "swift-nio")]),
        .testTarget(name: "RoutingTests", dependencies: ["Routing", "XDS", "Configuration",
                                                         .product(name: "HTTPTypes", package: "swift-http-types"),
                                                         .product(name: "SwiftProtobuf", package: "swift-protobuf")]),
        .testTarget(name: "AuthorizationTests", dependencies: ["Authorization", "Routing", "XDS", "Configuration",
                                                               .product(name: "HTTPTypes", package: "swift-http-types"),
                                                               .product(name: "SwiftProtobuf", package: "swift-protobuf")]),
        .testTarget(name: "HTTPProxyTests", dependencies: ["HTTPProxy", "Authorization", "Routing", "XDS", "Configuration",
                                                           .product(name: "Crypto", package: "swift-crypto"),
                                                           .product(name: "_CryptoExtras", package: "swift-crypto"),
                                                           .product(name: "NIOCore", package: "swift-nio"),
                                                           .product(name: "NIOEmbedded", package: "swift-nio"),
                                                           .product(name: "NIOPosix", package: "swift-nio"),
                                                           .product(name: "NIOHTTP1", package: "swift-nio"),
                                                           .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                                                           .product(name: "NIOHTTPTypes", package: "swift-nio-extras"), .product(name: "NIOHTTPTypesHTTP2", package: "swift-nio-extras"),
                                                           .product(name: "HTTPTypes", package: "swift-http-types"),
                                                           .product(name: "SwiftProtobuf", package: "swift-protobuf")]),
        .testTarget(name: "CapstanCLITests", dependencies: ["CapstanCLI", "Capture"]),
        .testTarget(name: "EndToEndTests",
                    dependencies: ["Capture", "Netfilter", "NodeAgent", "Configuration", "CapstanTestSupport", "CapstanCLI", "DNS"],
                    // Protocol peers we did not write (Python), run by the tests.
                    exclude: ["Peers"]),
    ]
)
