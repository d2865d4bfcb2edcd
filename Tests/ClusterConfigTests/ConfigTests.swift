import ClusterConfig
import Testing

@Suite struct ConfigDecoding {
    @Test func designExample() throws {
        let c = try ClusterConfiguration.decode("""
            {
              "workers": "auto",
              "listen": ["0.0.0.0:8080", "[::]:8080"],
              "controlSocket": "/run/clusterd/control.sock",
              "drainTimeout": 30,
              "http": { "keepAliveTimeout": 75, "headerTimeout": 10, "maxHeaderBytes": 16384, "maxBodyBytes": 1048576 },
              "routes": [ { "path": "/", "status": 200, "contentType": "text/plain", "body": "Hello world!" } ],
              "static": [ { "prefix": "/assets/", "root": "/var/www/assets" } ],
              "accessLog": { "path": "/var/log/clusterd/access.log", "format": "combined" }
            }
            """, file: "clusterd.json")
        #expect(c.workers == .auto)
        #expect(c.listen == [ListenAddress(host: "0.0.0.0", port: 8080), ListenAddress(host: "::", port: 8080)])
        #expect(c.routes.first?.body == "Hello world!")
        #expect(c.staticRoots == [.init(prefix: "/assets/", root: "/var/www/assets")])
        #expect(c.accessLog?.format == .combined)
        #expect(c.http.maxHeaderBytes == 16384)
    }

    @Test func defaults() throws {
        let c = try ClusterConfiguration.decode(#"{"listen": ["127.0.0.1:9000"]}"#, file: "f.json")
        #expect(c.workers == .auto)
        #expect(c.controlSocket == "/run/clusterd/control.sock")
        #expect(c.drainTimeout == 30)
        #expect(c.releaseMemoryAfterIdle == 10)
        #expect(c.deferAccept == false)
        #expect(c.busyPoll == 20)
        #expect(c.http == ClusterConfiguration.HTTPSettings())
        #expect(c.routes.isEmpty)
    }

    /// Issue 12 item 18: hidden names are served only where a static root allows them.
    @Test func staticAllowHidden() throws {
        let c = try ClusterConfiguration.decode(#"{"listen":["127.0.0.1:9000"],"static":[{"prefix":"/a/","root":"/x"},{"prefix":"/b/","root":"/y","allowHidden":true}]}"#, file: "f.json")
        #expect(c.staticRoots.map(\.allowHidden) == [false, true])
        #expect(throws: ConfigError.self) {
            try ClusterConfiguration.decode(#"{"listen":["127.0.0.1:9000"],"static":[{"prefix":"/a/","root":"/x","allowHidden":"yes"}]}"#, file: "f.json")
        }
        // Issue 12 item 3: a prefix is part of every directory redirect, so it cannot name another host.
        for prefix in ["//evil.example/", "/\\\\evil/", "/a//b/"] {
            #expect(throws: ConfigError.self, "\(prefix)") {
                try ClusterConfiguration.decode(#"{"listen":["127.0.0.1:9000"],"static":[{"prefix":"\#(prefix)","root":"/x"}]}"#, file: "f.json")
            }
        }
    }

    static let errors: [(String, String)] = [
        (#"{"listen":["0.0.0.0:80"],"http":{"maxHeaderBytes":12}}"#, "clusterd.json: http.maxHeaderBytes: must be 1024...1048576, got 12"),
        (#"{"listen":["0.0.0.0:80"],"colour":"red"}"#, "clusterd.json: colour: unknown key"),
        (#"{"listen":["0.0.0.0:80"],"http":{"keepalive":5}}"#, "clusterd.json: http.keepalive: unknown key"),
        (#"{"listen":["0.0.0.0:80"],"workers":"many"}"#, "clusterd.json: workers: must be a number or \"auto\", got \"many\""),
        (#"{"listen":["0.0.0.0:80"],"workers":0}"#, "clusterd.json: workers: must be 1...256 (maxWorkers), got 0"),
        (#"{"listen":["0.0.0.0:80"],"workers":2.5}"#, "clusterd.json: workers: must be a number or \"auto\", got a number"),
        (#"{"workers":2}"#, "clusterd.json: listen: is required: the addresses to serve on, e.g. [\"0.0.0.0:8080\"]"),
        (#"{"listen":[]}"#, "clusterd.json: listen: must name at least one address"),
        (#"{"listen":["localhost:80"]}"#, "clusterd.json: listen[0]: 'localhost' is not a numeric IPv4 address (write IPv6 as [::]:PORT), got \"localhost:80\""),
        (#"{"listen":["0.0.0.0:99999"]}"#, "clusterd.json: listen[0]: port must be 1...65535, got '99999', got \"0.0.0.0:99999\""),
        (#"{"listen":["0.0.0.0:80","0.0.0.0:80"]}"#, "clusterd.json: listen[1]: 0.0.0.0:80 is listed twice"),
        (#"{"listen":"0.0.0.0:80"}"#, "clusterd.json: listen: must be an array, got a string"),
        (#"{"listen":["0.0.0.0:80"],"routes":[{"path":"x"}]}"#, "clusterd.json: routes[0].path: must be an absolute path without query, spaces or control characters, got \"x\""),
        (#"{"listen":["0.0.0.0:80"],"routes":[{"path":"/","status":99}]}"#, "clusterd.json: routes[0].status: must be 200...599, got 99"),
        (#"{"listen":["0.0.0.0:80"],"routes":[{"path":"/","headers":{"Content-Length":"3"}}]}"#, "clusterd.json: routes[0].headers.Content-Length: is set by the server (use contentType for Content-Type)"),
        (#"{"listen":["0.0.0.0:80"],"static":[{"prefix":"/a","root":"/x"}]}"#, "clusterd.json: static[0].prefix: must start and end with '/', got \"/a\""),
        (#"{"listen":["0.0.0.0:80"],"accessLog":{"path":"/x","format":"xml"}}"#, "clusterd.json: accessLog.format: must be \"combined\" or \"json\", got \"xml\""),
        (#"{"listen":["0.0.0.0:80"],"controlSocket":"relative.sock"}"#, "clusterd.json: controlSocket: must be an absolute path, got \"relative.sock\""),
        (#"{"listen":["0.0.0.0:80"],"drainTimeout":-1}"#, "clusterd.json: drainTimeout: must be 0...3600 seconds, got -1"),
        (#"{"listen":["0.0.0.0:80"],"deferAccept":"yes"}"#, "clusterd.json: deferAccept: must be true or false, got a string"),
        (#"{"listen":["0.0.0.0:80"],"releaseMemoryAfterIdle":"soon"}"#, "clusterd.json: releaseMemoryAfterIdle: must be a number of seconds, got a string"),
        (#"{"listen":["0.0.0.0:80"],"busyPoll":5000}"#, "clusterd.json: busyPoll: must be 0...1000, got 5000"),
        (#"{"listen":["0.0.0.0:80"],"http":{"maxBodyBytes":"big"}}"#, "clusterd.json: http.maxBodyBytes: must be a number, got a string"),
        ("{\"listen\":[\"0.0.0.0:80\"],}", "clusterd.json: not valid JSON: line 1, column 26: expected a string key"),
    ]

    @Test(arguments: errors.indices)
    func errorNamesFileAndKeyPath(_ i: Int) {
        let (json, message) = Self.errors[i]
        do {
            _ = try ClusterConfiguration.decode(json, file: "clusterd.json")
            Issue.record("accepted: \(json)")
        } catch {
            #expect(error.description == message)
        }
    }

    @Test func listenAddresses() throws {
        #expect(try ListenAddress.parse("[::1]:8080").get() == ListenAddress(host: "::1", port: 8080))
        #expect(try ListenAddress.parse("10.0.0.1:1").get().description == "10.0.0.1:1")
        #expect((try? ListenAddress.parse("[::1]8080").get()) == nil)
        #expect((try? ListenAddress.parse("1.2.3:80").get()) == nil)
        #expect((try? ListenAddress.parse("256.1.1.1:80").get()) == nil)
    }
}

@Suite struct AffinityConfig {
    @Test func parses() throws {
        let c = try ClusterConfiguration.decode(#"{"listen":["0.0.0.0:1"],"cpuAffinity":[2,3],"reusePortSteering":"cpu"}"#, file: "f")
        #expect(c.cpuAffinity == .list([2, 3]))
        #expect(c.cpuAffinity.cpu(forSlot: 3, allowed: Array(0..<8)) == 3)
        #expect(c.reusePortSteering == .cpu)
        #expect(ClusterConfiguration.CPUAffinity.auto.cpu(forSlot: 5, allowed: [0, 1, 2, 3]) == 1)
        // In a cpuset (a container, taskset) auto walks the allowed CPUs, not 0...n-1.
        #expect(ClusterConfiguration.CPUAffinity.auto.cpu(forSlot: 0, allowed: [4, 6]) == 4)
        #expect(ClusterConfiguration.CPUAffinity.auto.cpu(forSlot: 3, allowed: [4, 6]) == 6)
        #expect(ClusterConfiguration.CPUAffinity.off.cpu(forSlot: 0, allowed: [0, 1]) == nil)
        #expect(ClusterConfiguration.WorkerCount.auto.resolved(cpus: 2) == 2)
    }

    @Test func rejects() {
        #expect(throws: ConfigError(file: "f", keyPath: "cpuAffinity", message: "must be \"off\", \"auto\" or a list of CPU numbers")) {
            try ClusterConfiguration.decode(#"{"listen":["0.0.0.0:1"],"cpuAffinity":"all"}"#, file: "f")
        }
        #expect(throws: ConfigError(file: "f", keyPath: "cpuAffinity[1]", message: "must be a CPU number 0...4095")) {
            try ClusterConfiguration.decode(#"{"listen":["0.0.0.0:1"],"cpuAffinity":[0,-1]}"#, file: "f")
        }
    }
}
