import ClusterControl
import Testing

/// The master writes a worker's start-up (descriptor layout and identity) as environment variables
/// and the worker reads them back: one type, so the two sides cannot drift apart.
@Suite struct WorkerStartupRoundTrip {
    static func lookup(_ environment: [String]) -> (String) -> String? {
        var table: [String: String] = [:]
        for entry in environment {
            guard let eq = entry.firstIndex(of: "=") else { continue }
            table[String(entry[..<eq])] = String(entry[entry.index(after: eq)...])
        }
        return { table[$0] }
    }

    @Test(arguments: [1, 2, 16])
    func whatTheMasterWritesTheWorkerReads(listeners: Int) {
        let startup = WorkerStartup(slot: 3, generation: 7, listenerCount: listeners, statsSlots: 40, statsSlot: 11,
                                    masterPID: 4242, configPath: "/etc/clusterd/clusterd.json", build: "e17ca85fc624")
        #expect(WorkerStartup(environment: Self.lookup(startup.environment)) == startup)
        // The layout: listeners from fd 3, then channel, stats and config, in the order inherited.
        #expect(startup.listenerFDs == (0..<listeners).map { 3 + Int32($0) })
        let inherited = WorkerStartup.inherited(listeners: (0..<listeners).map { 100 + Int32($0) }, channel: 200, stats: 201, config: 202)
        #expect(inherited[Int(startup.channelFD - 3)] == 200)
        #expect(inherited[Int(startup.statsFD - 3)] == 201)
        #expect(inherited[Int(startup.configFD - 3)] == 202)
        #expect(startup.environment.contains("LISTEN_FDS=\(listeners)"))
    }

    @Test func aBrokenOrForeignEnvironmentIsRefused() {
        let good = WorkerStartup(slot: 0, generation: 1, listenerCount: 2, statsSlots: 8, statsSlot: 0, masterPID: 10, configPath: "c")
        #expect(WorkerStartup(environment: { _ in nil }) == nil)
        for (name, value) in [("CLUSTERD_WORKER_SLOT", "x"), ("LISTEN_FDS", "0"), ("CLUSTERD_STATS_SLOT", "8"),
                              ("CLUSTERD_MASTER_PID", "-1"), ("CLUSTERD_CHANNEL_FD", "4"), ("CLUSTERD_CONFIG_FD", "99"),
                              ("CLUSTERD_IMAGE_FD", "3")] {
            let env = good.environment.filter { !$0.hasPrefix(name + "=") } + ["\(name)=\(value)"]
            #expect(WorkerStartup(environment: Self.lookup(env)) == nil, "\(name)=\(value)")
        }
    }
}
