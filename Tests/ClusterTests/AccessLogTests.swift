#if canImport(Glibc)
import Glibc
#endif
import ClusterControl
import Dispatch
import ClusterHTTP
import ClusterSystem
@testable import ClusterWorker
import Logging
import Testing

/// Issue 12 item 13: an access log on a full disk drops whole lines, counts them, and says so a
/// bounded number of times.
@Suite struct AccessLogFullDisk {
    /// Log messages kept for the test to read.
    final class Lines: @unchecked Sendable {
        var messages: [(Logger.Level, String)] = []
    }

    struct Capture: LogHandler {
        let lines: Lines
        var logLevel: Logger.Level = .trace
        var metadata: Logger.Metadata = [:]
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) {
            lines.messages.append((event.level, event.message.description))
        }
    }

    func logger(_ lines: Lines) -> Logger {
        Logger(label: "test") { _ in Capture(lines: lines) }
    }

    @Test func devFullDropsWholeLinesCountsThemAndReportsOnce() {
        let lines = Lines()
        let stats = StatsSlot.privateSlot()
        defer { stats.base.deallocate() }
        let log = AccessLog(path: "/dev/full", format: .combined, logger: logger(lines), stats: stats)
        // 300 loop turns of 7 lines each: before the fix, one error line per turn.
        for _ in 0..<300 {
            for _ in 0..<7 { log.appendRejected(HTTPError(400, "bad"), peer: "127.0.0.1", wall: 1_800_000_000) }
            log.flush()
        }
        #expect(log.droppedLines == 2100)
        #expect(stats[.accessLogDroppedLines] == 2100)
        let errors = lines.messages.filter { $0.0 == .error }
        #expect(errors.count == 1, "\(errors)")
        #expect(errors.first?.1.contains("No space left on device") == true)
        #expect(errors.first?.1.contains("7 line(s) dropped") == true)
    }

    @Test func recoveryIsReportedWithinTheSameLimit() {
        let lines = Lines()
        let log = AccessLog(path: "/dev/full", format: .combined, logger: logger(lines))
        log.appendRejected(HTTPError(400, "bad"), peer: nil, wall: 1_800_000_000)
        log.flush()
        // More drops within the interval: counted, not reported.
        log.appendRejected(HTTPError(400, "bad"), peer: nil, wall: 1_800_000_000)
        log.flush()
        // The disk has room again (the descriptor now takes everything).
        log.file = Descriptor(taking: open("/dev/null", O_WRONLY | O_CLOEXEC))
        log.appendRejected(HTTPError(400, "bad"), peer: nil, wall: 1_800_000_000)
        log.flush()
        #expect(lines.messages.count == 1, "\(lines.messages)")
        // 10 s later: said once, with what was dropped since the error line.
        log.lastReportMilliseconds = Clock.monotonicMilliseconds() - AccessLog.reportIntervalMilliseconds
        log.appendRejected(HTTPError(400, "bad"), peer: nil, wall: 1_800_000_000)
        log.flush()
        log.appendRejected(HTTPError(400, "bad"), peer: nil, wall: 1_800_000_000)
        log.flush()
        #expect(lines.messages.count == 2, "\(lines.messages)")
        #expect(lines.messages.last?.0 == .notice)
        #expect(lines.messages.last?.1.contains("writing again; 1 line(s) dropped since the last report") == true)
        #expect(log.droppedLines == 2)
    }

    @Test func aTornLineIsCutOffAgain() throws {
        let path = try temporaryFile()
        defer { unlink(path) }
        let lines = Lines()
        let log = AccessLog(path: path, format: .combined, logger: logger(lines))
        // What a short write leaves: a whole line, then the start of the next.
        let partial = Array("whole line\nthe start of".utf8)
        #expect(partial.withUnsafeBytes { write(log.fd, $0.baseAddress, $0.count) } == partial.count)
        #expect(log.cutTornLine(12))
        let text = try FileIO.readAll(path: path)
        #expect(String(decoding: text, as: UTF8.self) == "whole line\n")
    }

    /// Issue 12 follow-up: the workers' appends and cut-backs exclude each other through the
    /// file's flock. Another open of the file (another worker) holds the lock: the flush waits for
    /// it instead of writing (before the fix it wrote at once, so a worker could land its line
    /// between another's torn line and its cut-back or its completion).
    @Test func aFlushWaitsWhileAnotherWriterHoldsTheLock() throws {
        let path = try temporaryFile()
        defer { unlink(path) }
        let other = open(path, O_WRONLY | O_APPEND | O_CLOEXEC)
        #expect(other >= 0)
        defer { close(other) }
        #expect(flock(other, LOCK_EX) == 0)
        final class Shared: @unchecked Sendable {
            let log: AccessLog
            init(_ log: AccessLog) { self.log = log }
        }
        let shared = Shared(AccessLog(path: path, format: .combined, logger: logger(Lines())))
        shared.log.appendRejected(HTTPError(400, "bad"), peer: "127.0.0.1", wall: 1_800_000_000)
        let flushed = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            shared.log.flush()
            flushed.signal()
        }
        #expect(flushed.wait(timeout: .now() + .milliseconds(300)) == .timedOut)
        #expect(try FileIO.size(fd: other) == 0)
        #expect(flock(other, LOCK_UN) == 0)
        #expect(flushed.wait(timeout: .now() + .seconds(10)) == .success)
        let text = try FileIO.readAll(path: path)
        #expect(String(decoding: text, as: UTF8.self).hasSuffix(" 400 4 \"-\" \"-\"\n"))
        // Released again after the flush: another writer gets it at once.
        #expect(flock(other, LOCK_EX | LOCK_NB) == 0)
    }

    @Test func newlineScans() {
        let bytes = Array("a\nbc\nd".utf8)
        bytes.withUnsafeBytes {
            #expect(AccessLog.lines(in: $0) == 2)
            #expect(AccessLog.lastNewline(in: $0) == 4)
            #expect(AccessLog.lastNewline(in: UnsafeRawBufferPointer(rebasing: $0[..<1])) == nil)
        }
    }
}

/// A new empty file under /tmp (mkstemp), for a test to remove.
private func temporaryFile() throws -> String {
    struct NoTemporaryFile: Error {}
    var template = Array("/tmp/clusterd-accesslog-XXXXXX".utf8CString)
    let tmp = mkstemp(&template)
    guard tmp >= 0 else { throw NoTemporaryFile() }
    close(tmp)
    return String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
