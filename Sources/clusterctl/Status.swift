import ArgumentParser
import ClusterControl
import ClusterJSON

struct Status: ControlCommand {
    static let configuration = CommandConfiguration(abstract: "Show the daemon's state, totals and workers.")

    @OptionGroup var connection: ConnectionOptions
    @ParentCommand var root: Clusterctl

    @Flag(name: .long, help: "Print the daemon's JSON answer.")
    var json = false

    func run() throws {
        let status = try send(.status)
        let workers = try send(.workers)
        if json {
            var combined = status
            combined["workerList"] = workers["workers"]
            print(JSON.object(combined).serialized)
            return
        }
        func i(_ key: String) -> Int64 { status[key]?.int64Value ?? 0 }
        let listen = status["listen"]?.arrayValue?.compactMap(\.stringValue).joined(separator: ", ") ?? ""
        print("clusterd pid \(i("pid")) \(status["state"]?.stringValue ?? "?"), generation \(i("generation")), \(i("workers")) workers (\(i("ready")) ready, \(i("draining")) draining), up \(duration(i("uptime")))")
        print("requests \(groupedDigits(i("requests"))) total, \(groupedDigits(clampedInt64(status["requestsPerSecond"]?.doubleValue ?? 0))) req/s, \(groupedDigits(i("connections"))) connections open, \(Self.reloads(succeeded: i("reloads"), failed: i("failedReloads"))), \(i("restarts")) restarts")
        print("listen \(listen); config \(status["config"]?.stringValue ?? "?")")
        if let e = status["lastReloadError"]?.stringValue { print("last reload failed: \(e)") }
        if let line = Self.buildLine(status) { print(line) }
        print()
        print(Workers.render(workers))
    }

    /// "build 1a2b… (the binary on disk is the same)", or what differs: a package upgrade installed
    /// another build, which runs only after `clusterctl upgrade`. Nil from a master that does not say.
    static func buildLine(_ status: JSONObject) -> String? {
        guard let running = status["build"]?.stringValue else { return nil }
        let shown = running.isEmpty ? "(none)" : running
        let binary = status["binary"]?.stringValue ?? "?"
        if let error = status["binaryError"]?.stringValue { return "build \(shown); \(binary) cannot be read: \(error)" }
        guard status["binaryDiffers"]?.boolValue == true else { return "build \(shown) (the binary on disk is the same)" }
        let onDisk = status["binaryBuild"]?.stringValue ?? ""
        return "build \(shown); \(binary) is build \(onDisk.isEmpty ? "(none)" : onDisk) now: run `clusterctl upgrade` to switch to it"
    }

    /// "16 reloads (7 succeeded, 9 failed)": the first number counts every attempt.
    static func reloads(succeeded: Int64, failed: Int64) -> String {
        let (total, overflow) = succeeded.addingReportingOverflow(failed)
        return "\(overflow ? "many" : String(total)) reloads (\(succeeded) succeeded, \(failed) failed)"
    }
}

struct Workers: ControlCommand {
    static let configuration = CommandConfiguration(abstract: "List the worker processes.")

    @OptionGroup var connection: ConnectionOptions
    @ParentCommand var root: Clusterctl

    @Flag(name: .long, help: "Print the daemon's JSON answer.")
    var json = false

    func run() throws {
        let workers = try send(.workers)
        print(json ? JSON.object(workers).serialized : Self.render(workers))
    }

    static func render(_ answer: JSONObject) -> String {
        let rows = (answer["workers"]?.arrayValue ?? []).map { w -> [String] in
            func i(_ key: String) -> Int64 { w[key]?.int64Value ?? 0 }
            return [String(i("slot")), String(i("pid")), String(i("generation")), w["state"]?.stringValue ?? "?", duration(i("uptime")), groupedDigits(i("requests")), groupedDigits(i("connections"))]
        }
        return table(["SLOT", "PID", "GEN", "STATE", "UPTIME", "REQUESTS", "CONNS"], rows)
    }
}
