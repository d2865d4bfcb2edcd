import ClusterConfig
import ClusterMaster
import ClusterSystem
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A reload's load (read, decode, validation with the app's handler check) runs off the master's
/// loop: a validation that blocks (a static root or access log on a hung mount) does not block it.
@Suite struct ConfigLoadTests {
    func writeConfig(_ text: String) throws -> String {
        let path = "/tmp/clusterd-configload-\(Sys.pid)-\(UInt32.random(in: 0...UInt32.max)).json"
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        #expect(fd >= 0)
        let bytes = Array(text.utf8)
        #expect(write(fd, bytes, bytes.count) == bytes.count)
        close(fd)
        return path
    }

    @Test func aBlockingValidationDoesNotBlockTheCaller() throws {
        let path = try writeConfig(#"{"workers": 3, "listen": ["127.0.0.1:18080"]}"#)
        defer { unlink(path) }
        let (r, w) = try Sys.pipe()
        try Sys.setNonBlocking(r, false)
        let caller = pthread_self()
        let ranOnCaller = UnsafeMutablePointer<Bool>.allocate(capacity: 1)
        ranOnCaller.initialize(to: true)
        defer { ranOnCaller.deallocate() }
        nonisolated(unsafe) let flag = ranOnCaller
        // Blocks until the test writes to the pipe, as a stat on a hung mount would.
        let load = try ConfigLoad.start(path: path, validate: ConfigLoad.Validation { config in
            flag.pointee = pthread_equal(pthread_self(), caller) != 0
            var byte: UInt8 = 0
            _ = read(r, &byte, 1)
            Sys.close(r)
            if config.workers != .fixed(3) { throw ConfigError(file: path, keyPath: "workers", message: "unexpected") }
        })
        var ready = pollfd(fd: load.call.readyFD, events: Int16(POLLIN), revents: 0)
        #expect(poll(&ready, 1, 100) == 0, "still validating: the caller goes on")
        #expect(load.call.result == nil && load.outcome == nil)
        #expect(try Sys.write(w, [UInt8(1)], 1) == .processed(1))
        Sys.close(w)
        #expect(poll(&ready, 1, 5000) == 1)
        #expect(!ranOnCaller.pointee, "validated on another thread")
        guard case .loaded(let config)? = load.outcome else {
            Issue.record("not loaded: \(String(describing: load.outcome))")
            return
        }
        #expect(config.workers == .fixed(3))
        #expect(try load.call.result?.get() == Array(#"{"workers": 3, "listen": ["127.0.0.1:18080"]}"#.utf8))
    }

    @Test func aFailedValidationComesBackAsText() throws {
        let path = try writeConfig(#"{"workers": 2, "listen": ["127.0.0.1:18080"]}"#)
        defer { unlink(path) }
        let load = try ConfigLoad.start(path: path, validate: ConfigLoad.Validation { _ in
            throw ConfigError(file: path, keyPath: "static[0].root", message: "/srv/www is not a readable directory")
        })
        var ready = pollfd(fd: load.call.readyFD, events: Int16(POLLIN), revents: 0)
        #expect(poll(&ready, 1, 5000) == 1)
        guard case .failed(let text)? = load.outcome else {
            Issue.record("not failed: \(String(describing: load.outcome))")
            return
        }
        #expect(text.contains("/srv/www is not a readable directory"))

        let bad = try writeConfig(#"{"workers": "#)
        defer { unlink(bad) }
        let undecodable = try ConfigLoad.start(path: bad, validate: ConfigLoad.Validation { _ in })
        var ready2 = pollfd(fd: undecodable.call.readyFD, events: Int16(POLLIN), revents: 0)
        #expect(poll(&ready2, 1, 5000) == 1)
        guard case .failed? = undecodable.outcome else {
            Issue.record("decoded: \(String(describing: undecodable.outcome))")
            return
        }
    }
}
