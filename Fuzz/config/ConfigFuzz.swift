#if canImport(Glibc)
import Glibc
#endif
// libFuzzer target over the config decoder: bytes → JSON (with comments, as config files are read)
// → ClusterConfiguration, the path every config file takes at --check-config, start and reload.
// Built by `make fuzz` (scripts/fuzz.sh) as one module with ClusterJSON's and ClusterConfig's
// sources: swiftc -sanitize=fuzzer,address.
//
// Invariants checked on every input (Tests/ClusterConfigTests/FuzzRegressionTests.swift replays
// crashers/ with the same ones):
//  - nothing traps (bounds, overflow, preconditions, a huge number formatted) and ASan sees no
//    memory error;
//  - every failure is a ConfigError naming the file and either a key path or a line and column
//    (or saying that the top level is not an object);
//  - comments change nothing else: a document strict JSON accepts decodes the same as a config;
//  - what is accepted holds the decoder's promises (listen addresses that do not overlap, no route
//    on /healthz or the metrics path, no server-set header on a route).

func checkConfigInvariants(_ bytes: [UInt8]) {
    do {
        let config = try ClusterConfiguration.decode(bytes, file: "fuzz.json")
        invariant(!config.listen.isEmpty && config.listen.count <= 16, "listen accepted with \(config.listen.count) addresses")
        for (i, a) in config.listen.enumerated() {
            invariant(a.ip != nil || a.unixPath.map { $0.hasPrefix("/") && $0.utf8.count <= ListenAddress.maxUnixPathBytes } == true,
                      "listen[\(i)] \(a) accepted but not an address")
            for b in config.listen[..<i] { invariant(!a.overlaps(b), "overlapping listeners accepted: \(b), \(a)") }
        }
        for r in config.routes {
            invariant(r.path != ClusterConfiguration.healthPath && r.path != config.metrics?.path, "route on a reserved path: \(r.path)")
            for h in r.headers { invariant(!ClusterConfiguration.serverHeaders.contains(h.name.lowercased()), "server header on a route: \(h.name)") }
        }
        if case .fixed(let n) = config.workers { invariant((1...config.maxWorkers).contains(n), "workers \(n) accepted") }
        // Strict JSON reads the same value: comments are the only extension.
        if let strict = try? JSONParser.parse(bytes, options: .strict) {
            let again = try ClusterConfiguration.decode(strict, file: "fuzz.json")
            invariant(again == config, "the same JSON decoded differently with and without the config options")
        }
    } catch {
        let text = error.description
        // A key path is what the document's keys make it (a key may hold any character); without
        // one, the message must give the line and column.
        invariant(text.hasPrefix("fuzz.json: "), "error without the file: \(text)")
        invariant(!error.message.isEmpty, "error without a message: \(text)")
        invariant(!error.keyPath.isEmpty || error.message.hasPrefix("not valid JSON: line ") || error.message.hasPrefix("the top level "),
                  "error with neither a key path nor a position: \(text)")
    }
}

/// precondition, with the message printed (an -O build drops precondition messages).
func invariant(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition {
        fputs("invariant failed: \(message())\n", stderr)
        abort()
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    checkConfigInvariants(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}
