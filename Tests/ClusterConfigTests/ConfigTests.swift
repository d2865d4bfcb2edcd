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
        (#"{"listen":["0.0.0.0:80"],"workers":"many"}"#, "clusterd.json: workers: must be a whole number or \"auto\", got \"many\""),
        (#"{"listen":["0.0.0.0:80"],"workers":0}"#, "clusterd.json: workers: must be 1...256 (maxWorkers), got 0"),
        (#"{"listen":["0.0.0.0:80"],"workers":2.5}"#, "clusterd.json: workers: must be a whole number or \"auto\", got 2.5"),
        (#"{"workers":2}"#, "clusterd.json: listen: is required: the addresses to serve on, e.g. [\"0.0.0.0:8080\"]"),
        (#"{"listen":[]}"#, "clusterd.json: listen: must name at least one address"),
        (#"{"listen":["localhost:80"]}"#, "clusterd.json: listen[0]: \"localhost:80\": 'localhost' is not a numeric IPv4 address (write IPv6 as [::]:PORT, a Unix socket as unix:/PATH)"),
        (#"{"listen":["0.0.0.0:99999"]}"#, "clusterd.json: listen[0]: \"0.0.0.0:99999\": the port must be 1...65535, got 99999"),
        (#"{"listen":["0.0.0.0:80","0.0.0.0:80"]}"#, "clusterd.json: listen[1]: \"0.0.0.0:80\" is the same address as listen[0] (0.0.0.0:80)"),
        (#"{"listen":"0.0.0.0:80"}"#, "clusterd.json: listen: must be an array, got a string"),
        (#"{"listen":["0.0.0.0:80"],"routes":[{"path":"x"}]}"#, "clusterd.json: routes[0].path: must be an absolute path without query, spaces or control characters, got \"x\""),
        (#"{"listen":["0.0.0.0:80"],"routes":[{"path":"/","status":99}]}"#, "clusterd.json: routes[0].status: must be 200...599, got 99"),
        (#"{"listen":["0.0.0.0:80"],"routes":[{"path":"/","headers":{"Content-Length":"3"}}]}"#, "clusterd.json: routes[0].headers.Content-Length: is set by the server itself (a second one would contradict it)"),
        (#"{"listen":["0.0.0.0:80"],"routes":[{"path":"/","headers":{"content-type":"a/b"}}]}"#, "clusterd.json: routes[0].headers.content-type: is set by the server: use the route's contentType"),
        (#"{"listen":["0.0.0.0:80"],"static":[{"prefix":"/a","root":"/x"}]}"#, "clusterd.json: static[0].prefix: must start and end with '/', got \"/a\""),
        (#"{"listen":["0.0.0.0:80"],"accessLog":{"path":"/x","format":"xml"}}"#, "clusterd.json: accessLog.format: must be \"combined\" or \"json\", got \"xml\""),
        (#"{"listen":["0.0.0.0:80"],"controlSocket":"relative.sock"}"#, "clusterd.json: controlSocket: must be an absolute path, got \"relative.sock\""),
        (#"{"listen":["0.0.0.0:80"],"drainTimeout":-1}"#, "clusterd.json: drainTimeout: must be 0...3600 seconds, got -1"),
        (#"{"listen":["0.0.0.0:80"],"deferAccept":"yes"}"#, "clusterd.json: deferAccept: must be true or false, got a string"),
        (#"{"listen":["0.0.0.0:80"],"releaseMemoryAfterIdle":"soon"}"#, "clusterd.json: releaseMemoryAfterIdle: must be a number of seconds, got a string"),
        (#"{"listen":["0.0.0.0:80"],"busyPoll":5000}"#, "clusterd.json: busyPoll: must be 0...1000, got 5000"),
        (#"{"listen":["0.0.0.0:80"],"http":{"maxBodyBytes":"big"}}"#, "clusterd.json: http.maxBodyBytes: must be a number, got a string"),
        ("{\"listen\":[\"0.0.0.0:80\"],}", "clusterd.json: not valid JSON: line 1, column 25: trailing comma before '}' (JSON allows none)"),
        // Issue 12 item 22: messages a newcomer can act on.
        ("{\"listen\":[\"0.0.0.0:80\",\n ]}", "clusterd.json: not valid JSON: line 1, column 24: trailing comma before ']' (JSON allows none)"),
        ("{\"listen\":[\"0.0.0.0:80\"]}\n/* note", "clusterd.json: not valid JSON: line 2, column 1: unterminated /* comment (it starts here)"),
        ("{\"listen\":[\"0.0.0.0:80\"] / 1}", "clusterd.json: not valid JSON: line 1, column 26: a comment starts with // or /*"),
        (#"{"listen":["0.0.0.0:80"],"http":{"maxBodyBytes":99999999999999999999999}}"#, "clusterd.json: http.maxBodyBytes: must be 0...1073741824, got a number out of range"),
        (#"{"listen":["0.0.0.0:80"],"http":{"maxBodyBytes":1.5}}"#, "clusterd.json: http.maxBodyBytes: must be a whole number, got 1.5"),
        (#"{"listen":["0.0.0.0:80"],"workers":1e300}"#, "clusterd.json: workers: must be 1...256 (maxWorkers), got a number out of range"),
        (#"{"listen":["0.0.0.0:80"],"drainTimeout":1e300}"#, "clusterd.json: drainTimeout: must be 0...3600 seconds, got a number out of range"),
        (#"{"listen":["0.0.0.0:80"],"drainTimeout":-0.5}"#, "clusterd.json: drainTimeout: must be 0...3600 seconds, got -0.5"),
        (#"{"listen":["0.0.0.0:80"],"cpuAffinity":[0,2.5]}"#, "clusterd.json: cpuAffinity[1]: must be a whole number, got 2.5"),
        ("{\"listen\":[\"0.0.0.0:80\"", "clusterd.json: not valid JSON: line 1, column 24: unexpected end of input (expected ',' or ']' in array)"),
        ("{\"listen\":[\"0.0.0.0:80\"],", "clusterd.json: not valid JSON: line 1, column 26: unexpected end of input (expected a string key in double quotes)"),
        ("{\"listen\":[\"0.0.0.0", "clusterd.json: not valid JSON: line 1, column 20: unexpected end of input (unterminated string)"),
        ("{\"listen\":[\"0.0.0.0:80\"],\"deferAccept\":tr", "clusterd.json: not valid JSON: line 1, column 40: unexpected end of input (in true)"),
        ("", "clusterd.json: not valid JSON: line 1, column 1: unexpected end of input (the document is empty)"),
        (#"{"listn":["0.0.0.0:80"]}"#, "clusterd.json: listn: unknown key (did you mean listen?)"),
        (#"{"listen":["0.0.0.0:80"],"Workers":2}"#, "clusterd.json: Workers: unknown key (did you mean workers?)"),
        (#"{"listen":["0.0.0.0:80"],"http":{"keepaliveTimeout":5}}"#, "clusterd.json: http.keepaliveTimeout: unknown key (did you mean keepAliveTimeout?)"),
        (#"{"listen":["0.0.0.0:80"],"routes":[{"path":"/","bdy":"x"}]}"#, "clusterd.json: routes[0].bdy: unknown key (did you mean body?)"),
        (#"{"listen":["0.0.0.0:80"],"accessLog":{"path":"/x","fromat":"json"}}"#, "clusterd.json: accessLog.fromat: unknown key (did you mean format?)"),
        (#"["0.0.0.0:80"]"#, "clusterd.json: the top level must be an object { ... }, got an array"),
        (#"{"":["0.0.0.0:80"]}"#, "clusterd.json: [\"\"]: unknown key"),
        (#"{"listen":["0.0.0.0:80"],"http":{"max.Body":1}}"#, "clusterd.json: http[\"max.Body\"]: unknown key"),
        // Issue 12 item 14: what start-up would fail on, refused by the check too.
        (#"{"listen":["[:::::]:8080"]}"#, "clusterd.json: listen[0]: \"[:::::]:8080\": ':::::' is not a numeric IPv6 address"),
        (#"{"listen":["[1:2:3:4:5:6:7:8:9]:8080"]}"#, "clusterd.json: listen[0]: \"[1:2:3:4:5:6:7:8:9]:8080\": '1:2:3:4:5:6:7:8:9' is not a numeric IPv6 address"),
        (#"{"listen":["[fe80::1%eth0]:8080"]}"#, "clusterd.json: listen[0]: \"[fe80::1%eth0]:8080\": a zone ('%eth0') is not supported: listen on the address itself"),
        (#"{"listen":["[::ffff:127.0.0.1]:8080"]}"#, "clusterd.json: listen[0]: \"[::ffff:127.0.0.1]:8080\": '::ffff:127.0.0.1' is an IPv4-mapped address: write it as 127.0.0.1:PORT"),
        (#"{"listen":["127.0.0.01:8080"]}"#, "clusterd.json: listen[0]: \"127.0.0.01:8080\": '127.0.0.01' is not a numeric IPv4 address (write IPv6 as [::]:PORT, a Unix socket as unix:/PATH)"),
        (#"{"listen":["0.0.0.0:8080","127.0.0.1:8080"]}"#, "clusterd.json: listen[1]: \"127.0.0.1:8080\" overlaps listen[0] (0.0.0.0:8080): 0.0.0.0:8080 already takes every IPv4 address on port 8080; list one or the other"),
        (#"{"listen":["127.0.0.1:8080","0.0.0.0:8080"]}"#, "clusterd.json: listen[1]: \"0.0.0.0:8080\" overlaps listen[0] (127.0.0.1:8080): 0.0.0.0:8080 already takes every IPv4 address on port 8080; list one or the other"),
        (#"{"listen":["[::]:8080","[::1]:8080"]}"#, "clusterd.json: listen[1]: \"[::1]:8080\" overlaps listen[0] ([::]:8080): [::]:8080 already takes every IPv6 address on port 8080; list one or the other"),
        (#"{"listen":["[::]:8080","[0:0::0]:8080"]}"#, "clusterd.json: listen[1]: \"[0:0::0]:8080\" is the same address as listen[0] ([::]:8080)"),
        (#"{"listen":["0.0.0.0:80"],"routes":[{"path":"/healthz","body":"x"}]}"#, "clusterd.json: routes[0].path: /healthz is served by clusterd itself (the health and readiness checks for load balancers): pick another path"),
        (#"{"listen":["0.0.0.0:80"],"routes":[{"path":"/metrics","body":"x"}]}"#, "clusterd.json: routes[0].path: /metrics is the metrics endpoint (metrics.path): pick another path, or move or turn off metrics"),
        (#"{"listen":["0.0.0.0:80"],"metrics":{"path":"/m"},"routes":[{"path":"/m"}]}"#, "clusterd.json: routes[0].path: /m is the metrics endpoint (metrics.path): pick another path, or move or turn off metrics"),
        (#"{"listen":["0.0.0.0:80"],"routes":[{"path":"/","headers":{"Server":"x"}}]}"#, "clusterd.json: routes[0].headers.Server: is set by the server itself (a second one would contradict it)"),
        (#"{"listen":["0.0.0.0:80"],"routes":[{"path":"/","headers":{"date":"x"}}]}"#, "clusterd.json: routes[0].headers.date: is set by the server itself (a second one would contradict it)"),
        (#"{"listen":["0.0.0.0:80"],"routes":[{"path":"/","headers":{"Transfer-Encoding":"x"}}]}"#, "clusterd.json: routes[0].headers.Transfer-Encoding: is set by the server itself (a second one would contradict it)"),
        (#"{"listen":["0.0.0.0:80"],"routes":[{"path":"/","headers":{"CONNECTION":"x"}}]}"#, "clusterd.json: routes[0].headers.CONNECTION: is set by the server itself (a second one would contradict it)"),
        // Issue 12 item 20: who may read /metrics.
        (#"{"listen":["0.0.0.0:80"],"metrics":{"allow":["10.0.0.1/8"]}}"#, "clusterd.json: metrics.allow[0]: \"10.0.0.1/8\": has bits set past the prefix length: did you mean 10.0.0.0/8?"),
        (#"{"listen":["0.0.0.0:80"],"metrics":{"allow":["10.0.0.0/33"]}}"#, "clusterd.json: metrics.allow[0]: \"10.0.0.0/33\": the prefix length must be 0...32 for IPv4"),
        (#"{"listen":["0.0.0.0:80"],"metrics":{"allow":["example.com"]}}"#, "clusterd.json: metrics.allow[0]: \"example.com\": 'example.com' is not a numeric IPv4 or IPv6 address"),
        (#"{"listen":["0.0.0.0:80"],"metrics":{"allow":[]}}"#, "clusterd.json: metrics.allow: must list at least one network (to turn metrics off, set metrics to null)"),
        (#"{"listen":["0.0.0.0:80"],"metrics":{"alow":["::1"]}}"#, "clusterd.json: metrics.alow: unknown key (did you mean allow?)"),
        (#"{"listen":["0.0.0.0:80"],"metrics":{"path":"/healthz"}}"#, "clusterd.json: metrics.path: /healthz is clusterd's own health or readiness check: pick another path"),
        (#"{"listen":["0.0.0.0:80"],"metrics":{},"metricsPath":"/m"}"#, "clusterd.json: metricsPath: is the older form of metrics.path: give metrics only"),
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

    @Test func userAndGroupAreNamesOrNumbers() throws {
        let c = try ClusterConfiguration.decode(#"{"listen": ["127.0.0.1:9000"], "user": "www-data", "group": 33}"#, file: "f.json")
        #expect(c.user == .name("www-data") && c.group == .id(33))
        #expect(try ClusterConfiguration.decode(#"{"listen": ["127.0.0.1:9000"], "user": 65534}"#, file: "f.json").user == .id(65534))
        #expect(ClusterConfiguration().user == nil && ClusterConfiguration().group == nil)
        for (text, expected) in [
            (#"{"listen": ["127.0.0.1:1"], "group": "adm"}"#, "group: needs user"),
            (#"{"listen": ["127.0.0.1:1"], "user": ""}"#, "user: must be a user or group name"),
            (#"{"listen": ["127.0.0.1:1"], "user": "a:b"}"#, "user: must be"),
            (#"{"listen": ["127.0.0.1:1"], "user": -1}"#, "user: must be a name or a number"),
            (#"{"listen": ["127.0.0.1:1"], "user": 1.5}"#, "user: must be a name or a number"),
            (#"{"listen": ["127.0.0.1:1"], "user": true}"#, "user: must be a name or a number"),
        ] {
            do {
                _ = try ClusterConfiguration.decode(text, file: "f.json")
                Issue.record("\(text) was accepted")
            } catch {
                #expect("\(error)".contains(expected), "\(text): \(error)")
            }
        }
    }

    @Test func theAppSectionIsTheApplicationsAndAnyObject() throws {
        let c = try ClusterConfiguration.decode(#"{"listen": ["127.0.0.1:9000"], "app": {"greeting": "hi", "pool": {"size": 4}}}"#, file: "f.json")
        #expect(c.app?["greeting"]?.stringValue == "hi" && c.app?["pool"]?["size"]?.intValue == 4)
        #expect(ClusterConfiguration().app == nil)
        for bad in [#""x""#, "[1]", "3"] {
            #expect(throws: ConfigError.self, "\(bad)") { try ClusterConfiguration.decode(#"{"listen": ["127.0.0.1:9000"], "app": \#(bad)}"#, file: "f.json") }
        }
    }

    @Test func proxyProtocolListenersNeedTrustedProxies() throws {
        let c = try ClusterConfiguration.decode(#"""
            {"listen": ["127.0.0.1:9000", {"address": "[::1]:9001", "proxyProtocol": true}, {"address": "127.0.0.1:9002"}],
             "trustedProxies": ["10.0.0.0/8", "::1"]}
            """#, file: "f.json")
        #expect(c.listen.map(\.description) == ["127.0.0.1:9000", "[::1]:9001", "127.0.0.1:9002"])
        #expect(c.proxyProtocol == [ListenAddress(host: "::1", port: 9001)])
        #expect(c.trustedProxies.count == 2 && c.trustedProxies[0].contains(IPAddress.parse("10.1.2.3")!))
        #expect(ClusterConfiguration().trustedProxies.isEmpty && ClusterConfiguration().proxyProtocol.isEmpty)
        let bad: [(String, String)] = [
            (#"{"listen": [{"address": "127.0.0.1:1", "proxyProtocol": true}]}"#, "listen[0].proxyProtocol: needs trustedProxies"),
            (#"{"listen": [{"proxyProtocol": true}]}"#, "listen[0].address: is required"),
            (#"{"listen": [{"address": "127.0.0.1:1", "proxy": true}]}"#, "listen[0]"),
            (#"{"listen": [{"address": "127.0.0.1:1", "proxyProtocol": "yes"}]}"#, "listen[0].proxyProtocol"),
            (#"{"listen": [{"address": "1.2.3.4"}]}"#, "listen[0].address"),
            (#"{"listen": [7]}"#, "or an object like"),
            (#"{"listen": ["127.0.0.1:1"], "trustedProxies": ["10.0.0.0/33"]}"#, "trustedProxies[0]"),
            (#"{"listen": ["127.0.0.1:1"], "trustedProxies": "10.0.0.0/8"}"#, "trustedProxies"),
        ]
        for (text, expected) in bad {
            #expect(throws: ConfigError.self, "\(text)") { try ClusterConfiguration.decode(text, file: "f.json") }
            do { _ = try ClusterConfiguration.decode(text, file: "f.json") } catch {
                #expect("\(error)".contains(expected), "\(text): \(error)")
            }
        }
    }

    @Test func unixSocketListeners() throws {
        let c = try ClusterConfiguration.decode(#"""
            {"listen": ["unix:/run/clusterd/a.sock", "127.0.0.1:9000",
                        {"address": "unix:/run/clusterd/b.sock", "mode": "0660", "group": "www-data", "proxyProtocol": true},
                        {"address": "unix:/run/clusterd/c.sock", "mode": "600", "group": 33}]}
            """#, file: "f.json")
        let a = ListenAddress.unix(path: "/run/clusterd/a.sock"), b = ListenAddress.unix(path: "/run/clusterd/b.sock")
        let c3 = ListenAddress.unix(path: "/run/clusterd/c.sock")
        #expect(c.listen == [a, ListenAddress(host: "127.0.0.1", port: 9000), b, c3])
        #expect(c.listen.map(\.description) == ["unix:/run/clusterd/a.sock", "127.0.0.1:9000", "unix:/run/clusterd/b.sock", "unix:/run/clusterd/c.sock"])
        // nginx's default for `listen unix:`: 0666; the group stays the master's unless given.
        #expect(c.unixSocketFiles[a] == UnixSocketFile(mode: 0o666, group: nil))
        #expect(c.unixSocketFiles[b] == UnixSocketFile(mode: 0o660, group: .name("www-data")))
        #expect(c.unixSocketFiles[c3] == UnixSocketFile(mode: 0o600, group: .id(33)))
        #expect(c.unixSocketFiles.count == 3, "none for a TCP listener")
        // A PROXY header on a Unix socket is believed from whoever may connect (the file's mode and
        // group decide): no trustedProxies needed.
        #expect(c.proxyProtocol == [b] && c.trustedProxies.isEmpty)
        #expect(a.host == nil && a.port == nil && a.ip == nil && a.unixPath == "/run/clusterd/a.sock" && !a.isIPv6)
        #expect(!a.overlaps(ListenAddress(host: "0.0.0.0", port: 80)) && !ListenAddress(host: "0.0.0.0", port: 80).overlaps(a))

        let long = "/" + String(repeating: "x", count: 106)
        #expect(try ClusterConfiguration.decode(#"{"listen": ["unix:\#(long)"]}"#, file: "f").listen == [.unix(path: long)])
        let bad: [(String, String)] = [
            (#"{"listen": ["unix:run/x.sock"]}"#, "listen[0]: \"unix:run/x.sock\": a Unix socket path must be absolute"),
            (#"{"listen": ["unix:"]}"#, "must be absolute"),
            (#"{"listen": ["unix:\#(long)x"]}"#, "at most 107 bytes (sun_path), this one has 108"),
            (#"{"listen": ["unix:/run//x.sock"]}"#, "write the path plainly"),
            (#"{"listen": ["unix:/run/./x.sock"]}"#, "write the path plainly"),
            (#"{"listen": ["unix:/run/../x.sock"]}"#, "write the path plainly"),
            (#"{"listen": ["unix:/run/x/"]}"#, "write the path plainly"),
            (#"{"listen": ["unix:/run/x\u0000y"]}"#, "control characters"),
            (#"{"listen": ["unix:/run/x.sock", {"address": "unix:/run/x.sock", "mode": "0600"}]}"#,
             "listen[1].address: \"unix:/run/x.sock\" is the same address as listen[0] (unix:/run/x.sock)"),
            (#"{"listen": [{"address": "unix:/run/x.sock", "mode": 660}]}"#, "listen[0].mode: must be a string of octal digits like \"0660\""),
            (#"{"listen": [{"address": "unix:/run/x.sock", "mode": "0680"}]}"#, "listen[0].mode: must be permission bits in octal"),
            (#"{"listen": [{"address": "unix:/run/x.sock", "mode": "4755"}]}"#, "listen[0].mode: must be permission bits in octal"),
            (#"{"listen": [{"address": "unix:/run/x.sock", "mode": ""}]}"#, "listen[0].mode"),
            (#"{"listen": [{"address": "unix:/run/x.sock", "mode": "00660"}]}"#, "listen[0].mode"),
            (#"{"listen": [{"address": "unix:/run/x.sock", "group": "a:b"}]}"#, "listen[0].group: must be a user or group name"),
            (#"{"listen": [{"address": "unix:/run/x.sock", "group": -1}]}"#, "listen[0].group"),
            (#"{"listen": [{"address": "127.0.0.1:1", "mode": "0660"}]}"#, "listen[0].mode: applies to a Unix socket (\"unix:/PATH\") only"),
            (#"{"listen": [{"address": "127.0.0.1:1", "group": "www-data"}]}"#, "listen[0].group: applies to a Unix socket"),
            (#"{"listen": [{"address": "unix:/run/x.sock", "owner": "root"}]}"#, "listen[0].owner: unknown key"),
            (#"{"listen": ["unix:/run/clusterd/control.sock"]}"#, "listen[0]: \"unix:/run/clusterd/control.sock\" is the control socket's path"),
            (#"{"listen": ["/run/x.sock"]}"#, "or unix:/PATH"),
        ]
        for (text, expected) in bad {
            do {
                _ = try ClusterConfiguration.decode(text, file: "f.json")
                Issue.record("\(text) was accepted")
            } catch {
                #expect("\(error)".contains(expected), "\(text): \(error)")
            }
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
        #expect(throws: ConfigError(file: "f", keyPath: "cpuAffinity[1]", message: "must be 0...4095 (a CPU number), got -1")) {
            try ClusterConfiguration.decode(#"{"listen":["0.0.0.0:1"],"cpuAffinity":[0,-1]}"#, file: "f")
        }
    }
}

@Suite struct ConfigComments {
    @Test func lineAndBlockCommentsAreAllowed() throws {
        let c = try ClusterConfiguration.decode("""
            // clusterd on the staging box
            {
              /* two workers: the box has 2 cores */
              "workers": 2, // pinned below
              "listen": ["127.0.0.1:8080" /* loopback only */],
              "routes": [{ "path": "/", "body": "// not a comment /* nor this */" }]
            }
            // end
            """, file: "f")
        #expect(c.workers == .fixed(2))
        #expect(c.routes.first?.body == "// not a comment /* nor this */")
    }

    @Test func unterminatedBlockCommentNamesWhereItStarts() {
        #expect(throws: ConfigError(file: "f", keyPath: "", message: "not valid JSON: line 3, column 3: unterminated /* comment (it starts here)")) {
            try ClusterConfiguration.decode("{\n  \"listen\": [\"0.0.0.0:1\"]\n  /* the rest\n}", file: "f")
        }
    }
}

@Suite struct ConfigChecks {
    @Test func ipv4AndIPv6ListenersOnOnePortDoNotOverlap() throws {
        // The IPv6 listeners are IPV6_V6ONLY: [::] takes no IPv4 connections.
        let c = try ClusterConfiguration.decode(#"{"listen":["0.0.0.0:8080","[::]:8080","127.0.0.1:9090","[::1]:9090","127.0.0.2:9090"]}"#, file: "f")
        #expect(c.listen.count == 5)
    }

    @Test func ipv6Parsing() {
        let valid = ["::", "::1", "1::", "fe80::1", "2001:db8::8:800:200c:417a", "1:2:3:4:5:6:7:8", "::ffff:10.0.0.1", "64:ff9b::192.0.2.33", "1:2:3:4:5:6:1.2.3.4"]
        for text in valid { #expect(IPAddress.parseIPv6(text) != nil, "\(text)") }
        let invalid = [":::::", ":::", "1:::2", "1::2::3", "1:2:3:4:5:6:7:8:9", "12345::", "g::", ":1", "1:", "1:2:3:4:5:6:7", "::1.2.3", "1.2.3.4::", "::1.2.3.04", "1::2:3:4:5:6:7:8", ""]
        for text in invalid { #expect(IPAddress.parseIPv6(text) == nil, "\(text)") }
        #expect(IPAddress.parseIPv6("2001:db8:0:0:0:0:0:1")?.description == "2001:db8::1")
        #expect(IPAddress.parseIPv6("::ffff:10.0.0.1")?.unmapped.description == "10.0.0.1")
        #expect(IPAddress.parseIPv4("256.0.0.1") == nil)
        #expect(IPAddress.parseIPv4("1.2.3") == nil)
        for wildcard in ["0.0.0.0", "::", "0:0::0"] { #expect(IPAddress.parse(wildcard)?.isUnspecified == true, "\(wildcard)") }
        for host in ["127.0.0.1", "::1"] { #expect(IPAddress.parse(host)?.isUnspecified == false, "\(host)") }
        // Another spelling of the same address overlaps (compared as bytes, not as text).
        #expect(ListenAddress(host: "::1", port: 80).overlaps(ListenAddress(host: "0:0::1", port: 80)))
    }

    @Test func networks() throws {
        let loopback = try IPNetwork.parse("127.0.0.0/8").get()
        #expect(loopback.contains(IPAddress.parse("127.1.2.3")!))
        #expect(!loopback.contains(IPAddress.parse("128.0.0.1")!))
        #expect(loopback.contains(IPAddress.parse("::ffff:127.0.0.1")!))
        #expect(!loopback.contains(IPAddress.parse("::1")!))
        let v6 = try IPNetwork.parse("2001:db8::/32").get()
        #expect(v6.contains(IPAddress.parse("2001:db8:ffff::1")!))
        #expect(!v6.contains(IPAddress.parse("2001:db9::1")!))
        #expect(try IPNetwork.parse("0.0.0.0/0").get().contains(IPAddress.parse("8.8.8.8")!))
        #expect(try IPNetwork.parse("10.1.2.3").get().prefixLength == 32)
        #expect(try IPNetwork.parse("10.0.0.0/12").get().contains(IPAddress.parse("10.15.255.255")!))
        #expect(!(try IPNetwork.parse("10.0.0.0/12").get().contains(IPAddress.parse("10.16.0.0")!)))
    }

    @Test func metricsDefaultToLoopbackOnly() throws {
        let c = try ClusterConfiguration.decode(#"{"listen":["0.0.0.0:1"]}"#, file: "f")
        let metrics = try #require(c.metrics)
        #expect(metrics.path == "/metrics")
        #expect(metrics.allows(IPAddress.parse("127.0.0.1")!))
        #expect(metrics.allows(IPAddress.parse("::1")!))
        #expect(!metrics.allows(IPAddress.parse("192.168.1.10")!))
        #expect(!metrics.allows(IPAddress.parse("2001:db8::1")!))
        let open = try ClusterConfiguration.decode(#"{"listen":["0.0.0.0:1"],"metrics":{"path":"/stats","allow":["0.0.0.0/0","::/0"]}}"#, file: "f")
        #expect(open.metrics?.path == "/stats")
        #expect(open.metrics?.allows(IPAddress.parse("192.168.1.10")!) == true)
        #expect(try ClusterConfiguration.decode(#"{"listen":["0.0.0.0:1"],"metrics":null}"#, file: "f").metrics == nil)
        #expect(try ClusterConfiguration.decode(#"{"listen":["0.0.0.0:1"],"metricsPath":null}"#, file: "f").metrics == nil)
        #expect(try ClusterConfiguration.decode(#"{"listen":["0.0.0.0:1"],"metricsPath":"/m"}"#, file: "f").metrics?.path == "/m")
    }

    @Test func suggestions() {
        #expect(ClusterConfiguration.suggestion(for: "listn") == "listen")
        #expect(ClusterConfiguration.suggestion(for: "drainTimout") == "drainTimeout")
        #expect(ClusterConfiguration.suggestion(for: "colour") == nil)
        #expect(ClusterConfiguration.suggestion(for: String(repeating: "x", count: 5000)) == nil)
    }
}

@Suite struct TLSConfigDecoding {
    func decode(_ listen: String) throws(ConfigError) -> ClusterConfiguration {
        try ClusterConfiguration.decode(#"{"listen": ["127.0.0.1:8080", \#(listen)]}"#, file: "f.json")
    }

    func message(_ listen: String) -> String? {
        do { _ = try decode(listen) } catch { return error.description }
        return nil
    }

    @Test func aListenerWithTLS() throws {
        let c = try decode(#"{"address": "0.0.0.0:8443", "tls": {"certificate": "/etc/clusterd/site.pem", "key": "/etc/clusterd/site.key"}}"#)
        #expect(c.listen.count == 2)
        #expect(c.tls[c.listen[0]] == nil)
        let tls = try #require(c.tls[c.listen[1]])
        #expect(tls.pairs == [TLS.Pair(certificate: "/etc/clusterd/site.pem", key: "/etc/clusterd/site.key")])
        #expect(tls.minVersion == .tls12)
        #expect(tls.ciphers == nil && tls.ciphersuites == nil)
        #expect(tls.kernelTLS)
    }

    @Test func everyKey() throws {
        let c = try decode(#"""
            {"address": "[::]:8443", "tls": {"certificate": "/a.pem", "key": "/a.key",
              "certificates": [{"certificate": "/b.pem", "key": "/b.key"}, {"certificate": "/c.pem", "key": "/c.key"}],
              "minVersion": "1.3", "ciphers": "ECDHE+AESGCM", "ciphersuites": "TLS_AES_256_GCM_SHA384", "kernelTLS": false}}
            """#)
        let tls = try #require(c.tls[c.listen[1]])
        #expect(tls.pairs.map(\.certificate) == ["/a.pem", "/b.pem", "/c.pem"])
        #expect(tls.minVersion == .tls13)
        #expect(tls.ciphers == "ECDHE+AESGCM")
        #expect(tls.ciphersuites == "TLS_AES_256_GCM_SHA384")
        #expect(!tls.kernelTLS)
    }

    @Test func mistakesNameTheKeyPath() {
        #expect(message(#"{"address": "0.0.0.0:8443", "tls": true}"#) == #"f.json: listen[1].tls: must be an object like {"certificate": "/etc/clusterd/site.pem", "key": "/etc/clusterd/site.key"}, got a boolean"#)
        #expect(message(#"{"address": "0.0.0.0:8443", "tls": {"key": "/k"}}"#) == "f.json: listen[1].tls.certificate: is required: the path of a PEM certificate chain")
        #expect(message(#"{"address": "0.0.0.0:8443", "tls": {"certificate": "/c"}}"#) == "f.json: listen[1].tls.key: is required: the path of the certificate's PEM private key")
        #expect(message(#"{"address": "0.0.0.0:8443", "tls": {"certificate": "c.pem", "key": "/k"}}"#) == #"f.json: listen[1].tls.certificate: must be an absolute path, got "c.pem""#)
        #expect(message(#"{"address": "0.0.0.0:8443", "tls": {"certificate": "/c", "key": "/k", "minVersion": "1.1"}}"#) == #"f.json: listen[1].tls.minVersion: must be "1.2" or "1.3", got "1.1""#)
        #expect(message(#"{"address": "0.0.0.0:8443", "tls": {"certificate": "/c", "key": "/k", "certificates": [{"certificate": "/d"}]}}"#) == "f.json: listen[1].tls.certificates[0].key: is required: the path of the certificate's PEM private key")
        #expect(message(#"{"address": "0.0.0.0:8443", "tls": {"certificate": "/c", "key": "/k", "ciphers": "A B"}}"#)?.hasPrefix("f.json: listen[1].tls.ciphers: must be a non-empty OpenSSL cipher list") == true)
        #expect(message(#"{"address": "0.0.0.0:8443", "tls": {"certificate": "/c", "key": "/k", "cert": "/x"}}"#)?.hasPrefix("f.json: listen[1].tls.cert: unknown key") == true)
        #expect(message(#"{"address": "0.0.0.0:8443", "proxyProtocol": true, "tls": {"certificate": "/c", "key": "/k"}}"#)?.contains("TLS on a proxyProtocol listener is not supported") == true)
    }
}
