// swift-tools-version:6.0
import PackageDescription

// Arrows only point down: clusterd/clusterctl → Cluster → ClusterMaster | ClusterWorker → ClusterControl,
// ClusterSystemd → ClusterSystem → CClusterShims. ClusterHTTP, ClusterJSON and
// ClusterConfig (over ClusterJSON) know nothing of processes or syscalls.
let package = Package(
    name: "clusterd",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "Cluster", targets: ["Cluster"]),
        .executable(name: "clusterd", targets: ["clusterd"]),
        .executable(name: "clusterctl", targets: ["clusterctl"]),
        .executable(name: "clusterd-example", targets: ["clusterd-example"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
    ],
    targets: [
        .systemLibrary(name: "CSystemd", pkgConfig: "libsystemd", providers: [.apt(["libsystemd-dev"])]),
        .target(name: "CClusterShims"),
        .target(name: "ClusterSystem", dependencies: ["CClusterShims"]),
        .target(name: "ClusterJSON"),
        .target(name: "ClusterHTTP"),
        .target(name: "ClusterConfig", dependencies: ["ClusterJSON"]),
        .target(name: "ClusterControl", dependencies: ["ClusterJSON"]),
        .target(name: "ClusterSystemd", dependencies: ["CSystemd", "ClusterSystem"]),
        .target(
            name: "ClusterWorker",
            dependencies: [
                "ClusterSystem", "ClusterHTTP", "ClusterConfig", "ClusterControl",
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
                "ClusterMaster", "ClusterWorker", "ClusterHTTP", "ClusterConfig", "ClusterSystem", "ClusterControl",
                .product(name: "Logging", package: "swift-log"),
            ]),
        .executableTarget(name: "clusterd", dependencies: ["Cluster"]),
        .executableTarget(name: "clusterd-example", dependencies: ["Cluster", "ClusterConfig", "ClusterHTTP", "ClusterJSON"]),
        .executableTarget(
            name: "clusterctl",
            dependencies: [
                "ClusterControl", "ClusterJSON", "ClusterConfig", "ClusterSystem",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
        .testTarget(name: "ClusterHTTPTests", dependencies: ["ClusterHTTP"]),
        .testTarget(name: "ClusterJSONTests", dependencies: ["ClusterJSON"]),
        .testTarget(name: "ClusterConfigTests", dependencies: ["ClusterConfig", "ClusterJSON"]),
        .testTarget(name: "ClusterSystemTests", dependencies: ["ClusterSystem"]),
        .testTarget(name: "ClusterMasterTests", dependencies: ["ClusterMaster", "ClusterConfig", "ClusterControl", "ClusterJSON", "ClusterSystem"]),
        .testTarget(name: "ClusterControlTests", dependencies: ["ClusterControl", "ClusterJSON"]),
        .testTarget(
            name: "ClusterWorkerTests",
            dependencies: [
                "ClusterWorker", "ClusterSystem", "ClusterHTTP", "ClusterControl",
                .product(name: "Logging", package: "swift-log"),
            ]),
        .testTarget(name: "ClusterTests", dependencies: ["Cluster", "ClusterControl", "ClusterWorker"]),
    ]
)
