import CSystemd  // libsystemd, the one C library this module is the door to
import ClusterSystem

/// sd_notify(3) through libsystemd. Without NOTIFY_SOCKET (not started by systemd) every call is a
/// no-op, so the daemon behaves the same under systemd, under a test, or in a terminal.
public struct SystemdNotifier: Sendable {
    public init() {}

    /// Whether systemd (or a test standing in for it) listens.
    public var isActive: Bool { Sys.environment("NOTIFY_SOCKET") != nil }

    /// Sends a raw notification (`KEY=VALUE` lines). Returns false when it could not be delivered.
    @discardableResult
    public func notify(_ state: String) -> Bool {
        sd_notify(0, state) > 0
    }

    public func ready(status: String) { notify("READY=1\nSTATUS=\(status)") }

    /// `RELOADING=1` with the CLOCK_MONOTONIC timestamp systemd 253+ requires (harmless on 252).
    public func reloading(status: String) {
        let usec = Clock.monotonicNanoseconds() / 1000
        notify("RELOADING=1\nMONOTONIC_USEC=\(usec)\nSTATUS=\(status)")
    }

    public func status(_ text: String) { notify("STATUS=\(text)") }

    public func stopping(status: String) { notify("STOPPING=1\nSTATUS=\(status)") }

    public func watchdog() { notify("WATCHDOG=1") }

    /// A failed start: the errno and a reason.
    public func failed(errno: Int32, status: String) { notify("ERRNO=\(errno)\nSTATUS=\(status)") }

    /// The watchdog interval systemd asked for (sd_watchdog_enabled), in microseconds, or nil.
    public func watchdogIntervalMicroseconds() -> UInt64? {
        var usec: UInt64 = 0
        return sd_watchdog_enabled(0, &usec) > 0 && usec > 0 ? usec : nil
    }
}
