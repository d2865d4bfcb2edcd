import ClusterConfig
import Testing

/// Issue 12 item 21: which control socket clusterctl uses, and why.
@Suite struct ControlSocketLocationRules {
    static let good: [UInt8] = Array(#"{"listen":["127.0.0.1:8080"],"controlSocket":"/run/moved/ctl.sock"}"#.utf8)

    static func files(_ table: [String: ControlSocketLocation.FileRead]) -> (String) -> ControlSocketLocation.FileRead {
        { table[$0] ?? .missing }
    }

    @Test func socketBeatsConfigBeatsEnvironmentBeatsDefaultConfig() throws {
        let read = Self.files(["/etc/x.json": .bytes(Self.good), ControlSocketLocation.defaultConfig: .bytes(Self.good)])
        #expect(try ControlSocketLocation.resolve(socket: "/a.sock", config: "/etc/x.json", environment: "/e.sock", readFile: read).get().path == "/a.sock")
        let fromConfig = try ControlSocketLocation.resolve(socket: nil, config: "/etc/x.json", environment: "/e.sock", readFile: read).get()
        #expect(fromConfig == ControlSocketLocation(path: "/run/moved/ctl.sock", source: "controlSocket in /etc/x.json"))
        #expect(try ControlSocketLocation.resolve(socket: nil, config: nil, environment: "/e.sock", readFile: read).get().path == "/e.sock")
        let fromDefault = try ControlSocketLocation.resolve(socket: nil, config: nil, environment: nil, readFile: read).get()
        #expect(fromDefault.path == "/run/moved/ctl.sock")
        #expect(fromDefault.source == "controlSocket in /etc/clusterd/clusterd.json")
    }

    @Test func withoutTheDefaultConfigTheBuiltInSocket() throws {
        let location = try ControlSocketLocation.resolve(socket: nil, config: nil, environment: nil, readFile: Self.files([:])).get()
        #expect(location.path == "/run/clusterd/control.sock")
        #expect(location.note == nil)
        // A config without controlSocket means the daemon's default too.
        let bare = Array(#"{"listen":["127.0.0.1:8080"]}"#.utf8)
        #expect(try ControlSocketLocation.resolve(socket: nil, config: "/c.json", environment: nil, readFile: Self.files(["/c.json": .bytes(bare)])).get().path == "/run/clusterd/control.sock")
    }

    @Test func anExplicitConfigThatCannotBeReadIsAnError() {
        let missing = ControlSocketLocation.resolve(socket: nil, config: "/nope.json", environment: nil, readFile: Self.files([:]))
        #expect(missing == .failure(ConfigError(file: "/nope.json", keyPath: "", message: "cannot read: no such file")))
        let garbage = ControlSocketLocation.resolve(socket: nil, config: "/g.json", environment: nil, readFile: Self.files(["/g.json": .bytes(Array("{{".utf8))]))
        guard case .failure = garbage else {
            Issue.record("garbage config accepted")
            return
        }
    }

    /// A config being edited (invalid as a whole) still names its socket: `reload` must reach the
    /// daemon to hear what is wrong.
    @Test func anInvalidConfigStillNamesItsSocket() throws {
        let invalid = Array(#"{"listen":["127.0.0.1:99999"],"controlSocket":"/run/x.sock","workers":"lots"}"#.utf8)
        #expect(try ControlSocketLocation.resolve(socket: nil, config: "/c.json", environment: nil, readFile: Self.files(["/c.json": .bytes(invalid)])).get().path == "/run/x.sock")
    }

    /// Operators annotate their configs: comments are read as the daemon reads them.
    @Test func aCommentedConfigNamesItsSocket() throws {
        let commented = Array("""
            // production
            {"listen":["127.0.0.1:8080"], /* moved */ "controlSocket":"/run/c.sock", "workers": "x"}
            """.utf8)
        #expect(try ControlSocketLocation.resolve(socket: nil, config: "/c.json", environment: nil, readFile: Self.files(["/c.json": .bytes(commented)])).get().path == "/run/c.sock")
    }

    /// An unreadable default config falls back to the built-in socket and says why.
    @Test func anUnreadableDefaultConfigFallsBackWithANote() throws {
        let read = Self.files([ControlSocketLocation.defaultConfig: .failed("Permission denied")])
        let location = try ControlSocketLocation.resolve(socket: nil, config: nil, environment: nil, readFile: read).get()
        #expect(location.path == "/run/clusterd/control.sock")
        #expect(location.note == "/etc/clusterd/clusterd.json: cannot read: Permission denied")
    }
}
