// swift-tools-version:6.0
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
    ],
    targets: [
        // System libraries: libnftables (ruleset transactions) and libmnl (rtnetlink).
        .systemLibrary(name: "CNFTables", pkgConfig: "libnftables",
                       providers: [.apt(["libnftables-dev"])]),
        .systemLibrary(name: "CMNL", pkgConfig: "libmnl",
                       providers: [.apt(["libmnl-dev"])]),

        // Kernel plumbing: nftables transactions, rtnetlink policy routing, network namespaces.
        .target(name: "Netfilter", dependencies: ["CNFTables", "CMNL"]),

        // What to capture and how: CaptureSpec, ruleset rendering, read-back, drift, packet trace.
        .target(name: "Capture", dependencies: ["Netfilter"]),

        // Dropping to the proxy's uid/gid with only the capability TPROXY needs.
        .target(name: "CProcessIdentity"),

        // The packaged proxy: capture listeners, original destination, TCP relay, admin API, stats, drain.
        .target(
            name: "DataPlane",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Atomics", package: "swift-atomics"),
                "CProcessIdentity",
            ]
        ),

        // The `capstan` executable: argument parsing and wiring only.
        .executableTarget(
            name: "CapstanCLI",
            dependencies: [
                "Capture", "Netfilter", "DataPlane",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),

        // Benchmarks of the capture engine in-process (run by hack/bench-init.sh).
        .executableTarget(name: "CaptureBenchmarks", dependencies: ["Capture", "Netfilter"],
                          path: "Benchmarks/CaptureBenchmarks"),

        // Test helpers shared by test targets: throw-away network namespaces and probe sockets.
        .target(
            name: "CapstanTestSupport",
            dependencies: ["Netfilter", "CMNL", .product(name: "NIOPosix", package: "swift-nio")],
            path: "Tests/CapstanTestSupport"
        ),

        .testTarget(name: "CaptureTests", dependencies: ["Capture", "CapstanTestSupport"]),
        .testTarget(name: "DataPlaneTests", dependencies: ["DataPlane", .product(name: "NIOCore", package: "swift-nio")]),
        .testTarget(name: "CapstanCLITests", dependencies: ["CapstanCLI", "Capture"]),
        .testTarget(name: "EndToEndTests",
                    dependencies: ["Capture", "Netfilter", "CapstanTestSupport", "CapstanCLI"]),
    ]
)
