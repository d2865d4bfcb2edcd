import ArgumentParser
import ClusterControl
import ClusterJSON
import ClusterSystem

struct Top: ControlCommand {
    static let configuration = CommandConfiguration(abstract: "Live requests per second per worker, refreshing.")

    @OptionGroup var connection: ConnectionOptions
    @ParentCommand var root: Clusterctl

    @Option(help: "Seconds between refreshes.")
    var interval: Double = 1

    @Option(help: "Stop after this many refreshes (default: until interrupted).")
    var iterations: Int?

    func validate() throws {
        guard interval >= 0.1 && interval <= 3600 else { throw ValidationError("--interval must be 0.1...3600 seconds") }
        if let iterations, iterations < 1 { throw ValidationError("--iterations must be at least 1") }
    }

    func run() throws {
        let tty = Sys.isTerminal(1)
        var previous: [Int64: Int64] = [:]  // pid → requests
        var previousTime = monotonicSeconds()
        var round = 0
        while iterations.map({ round < $0 }) ?? true {
            let status = try send(.status)
            let workers = try send(.workers)["workers"]?.arrayValue ?? []
            let now = monotonicSeconds()
            let dt = max(0.001, now - previousTime)
            var rows: [[String]] = []
            var total = 0.0
            for w in workers {
                func i(_ key: String) -> Int64 { w[key]?.int64Value ?? 0 }
                let pid = i("pid")
                let requests = i("requests")
                let rate = previous[pid].map { (Double(requests) - Double($0)) / dt } ?? 0
                total += rate
                previous[pid] = requests
                rows.append([String(i("slot")), String(pid), String(i("generation")), w["state"]?.stringValue ?? "?", groupedDigits(clampedInt64(rate.rounded())), groupedDigits(requests), groupedDigits(i("connections"))])
            }
            previousTime = now
            if tty { print("\u{1B}[H\u{1B}[2J", terminator: "") }
            let gen = status["generation"]?.intValue ?? 0
            print("clusterd top — generation \(gen), \(status["workers"]?.intValue ?? 0) workers, \(groupedDigits(clampedInt64(total.rounded()))) req/s (every \(interval) s)")
            print(table(["SLOT", "PID", "GEN", "STATE", "REQ/S", "REQUESTS", "CONNS"], rows))
            if !tty { print() }
            Sys.flushStandardStreams()
            round += 1
            if iterations.map({ round < $0 }) ?? true { Sys.sleep(milliseconds: Int(interval * 1000)) }
        }
    }

    func monotonicSeconds() -> Double {
        Double(Clock.monotonicNanoseconds()) / 1e9
    }
}
