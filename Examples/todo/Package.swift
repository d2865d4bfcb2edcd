// swift-tools-version:6.1
import PackageDescription

// clusterd-todo: a JSON API on PostgreSQL served by clusterd (the `Cluster` library of the package two
// folders up), and hummingbird-todo: the same API on Hummingbird 2, for `make bench`'s comparison.
// A package of its own so that plain clusterd never links swift-nio. Both share TodoCore: the
// DATABASE_URL parser, the todo's JSON shapes and the SQL.
let package = Package(
    name: "todo",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "clusterd-todo", targets: ["clusterd-todo"]),
        .executable(name: "hummingbird-todo", targets: ["hummingbird-todo"]),
    ],
    dependencies: [
        .package(name: "clusterd", path: "../.."),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.21.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.0.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.81.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
    ],
    targets: [
        .target(
            name: "TodoCore",
            dependencies: [
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        .executableTarget(
            name: "clusterd-todo",
            dependencies: [
                "TodoCore",
                .product(name: "Cluster", package: "clusterd"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        .executableTarget(
            name: "hummingbird-todo",
            dependencies: [
                "TodoCore",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        .testTarget(name: "TodoCoreTests", dependencies: ["TodoCore"]),
    ]
)
