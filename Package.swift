// swift-tools-version:6.0
import PackageDescription

// The module graph; arrows point down only (Docs/architecture.md walks it):
//   clusterd, clusterd-example → Cluster → ClusterMaster, ClusterWorker
//   ClusterApp (router, middleware, cookies: what an application builds on) → Cluster
//   ClusterTesting (TestClient: requests through any handler, in memory) → ClusterHTTP, ClusterSystem
//   ClusterMaster → ClusterSystemd (→ CSystemd: libsystemd), ClusterControl, ClusterConfig, ClusterSystem
//   ClusterWorker → ClusterHTTP, ClusterControl, ClusterConfig, ClusterSystem, ClusterTLS
//   ClusterTLS → CTLS (OpenSSL 3: libssl, libcrypto), ClusterConfig, ClusterSystem
//   clusterctl → ClusterControl, ClusterConfig, ClusterSystem, swift-argument-parser (≥ 1.6: @ParentCommand)
//   ClusterControl → ClusterJSON, ClusterSystem → CClusterShims
// ClusterHTTP and ClusterJSON depend on nothing, ClusterConfig only on ClusterJSON: none of the three
// knows of processes or syscalls. The master and the workers log through swift-log.
let package = Package(
    name: "clusterd",
    platforms: [.macOS(.v14)],
    products: [
        // An app imports ClusterApp (which re-exports Cluster, ClusterHTTP and ClusterConfig); its
        // tests import ClusterTesting too.
        .library(name: "Cluster", targets: ["Cluster", "ClusterApp"]),
        .library(name: "ClusterTesting", targets: ["ClusterTesting"]),
        .executable(name: "clusterd", targets: ["clusterd"]),
        .executable(name: "clusterctl", targets: ["clusterctl"]),
        .executable(name: "clusterd-example", targets: ["clusterd-example"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
    ],
    targets: [
        .systemLibrary(name: "CSystemd", pkgConfig: "libsystemd", providers: [.apt(["libsystemd-dev"])]),
        .target(name: "CClusterShims"),
        // OpenSSL 3 (libssl-dev): C for its macros and callbacks; only ClusterTLS imports it.
        .target(name: "CTLS", linkerSettings: [.linkedLibrary("ssl"), .linkedLibrary("crypto")]),
        .target(name: "ClusterTLS", dependencies: ["CTLS", "ClusterConfig", "ClusterSystem"]),
        .target(name: "ClusterSystem", dependencies: ["CClusterShims"]),
        .target(name: "ClusterJSON"),
        .target(name: "ClusterHTTP"),
        .target(name: "ClusterConfig", dependencies: ["ClusterJSON"]),
        .target(name: "ClusterControl", dependencies: ["ClusterJSON"]),
        .target(name: "ClusterSystemd", dependencies: ["CSystemd", "ClusterSystem"]),
        .target(
            name: "ClusterWorker",
            dependencies: [
                "ClusterSystem", "ClusterHTTP", "ClusterConfig", "ClusterControl", "ClusterTLS",
                .product(name: "Logging", package: "swift-log"),
            ]),
        .target(
            name: "ClusterMaster",
            dependencies: [
                "ClusterSystem", "ClusterConfig", "ClusterControl", "ClusterSystemd",
                .product(name: "Logging", package: "swift-log"),
            ]),
        .target(
            name: "Cluster",
            dependencies: [
                "ClusterMaster", "ClusterWorker", "ClusterHTTP", "ClusterConfig", "ClusterSystem", "ClusterControl", "ClusterJSON", "ClusterTLS",
                .product(name: "Logging", package: "swift-log"),
            ]),
        .target(
            name: "ClusterApp",
            dependencies: ["Cluster", "ClusterHTTP", "ClusterConfig", "ClusterSystem", .product(name: "Logging", package: "swift-log")]),
        .target(name: "ClusterTesting", dependencies: ["ClusterHTTP", "ClusterSystem"]),
        .executableTarget(name: "clusterd", dependencies: ["Cluster"]),
        .executableTarget(
            name: "clusterd-example",
            dependencies: ["Cluster", "ClusterConfig", "ClusterHTTP", "ClusterJSON", .product(name: "Logging", package: "swift-log")]),
        .executableTarget(
            name: "clusterctl",
            dependencies: [
                "ClusterControl", "ClusterJSON", "ClusterConfig", "ClusterSystem",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
        .target(name: "ClusterTestSupport", path: "Tests/Support"),
        .testTarget(name: "ClusterHTTPTests", dependencies: ["ClusterHTTP", "ClusterTestSupport"]),
        .testTarget(name: "ClusterJSONTests", dependencies: ["ClusterJSON"]),
        .testTarget(name: "ClusterConfigTests", dependencies: ["ClusterConfig", "ClusterJSON", "ClusterTestSupport"]),
        .testTarget(name: "ClusterSystemTests", dependencies: ["ClusterSystem"]),
        .testTarget(name: "ClusterTLSTests", dependencies: ["ClusterTLS", "ClusterConfig", "ClusterSystem"]),
        .testTarget(name: "ClusterMasterTests", dependencies: ["ClusterMaster", "ClusterConfig", "ClusterControl", "ClusterJSON", "ClusterSystem", "ClusterSystemd", "ClusterTestSupport"]),
        .testTarget(name: "ClusterControlTests", dependencies: ["ClusterControl", "ClusterJSON"]),
        .testTarget(
            name: "ClusterWorkerTests",
            dependencies: [
                "ClusterWorker", "ClusterSystem", "ClusterHTTP", "ClusterControl",
                .product(name: "Logging", package: "swift-log"),
            ]),
        .testTarget(name: "ClusterTests", dependencies: ["Cluster", "ClusterControl", "ClusterWorker"]),
        .testTarget(name: "ClusterAppTests", dependencies: ["ClusterApp", "ClusterTesting"]),
    ]
)
