#if canImport(Glibc)
import Glibc
#endif
import CClusterShims

/// CLOCK_MONOTONIC and CLOCK_REALTIME readings.
public enum Clock {
    /// Monotonic nanoseconds (clock_gettime(CLOCK_MONOTONIC)).
    @inlinable
    public static func monotonicNanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }

    /// Monotonic milliseconds.
    @inlinable
    public static func monotonicMilliseconds() -> Int64 {
        Int64(monotonicNanoseconds() / 1_000_000)
    }

    /// Wall-clock seconds since the epoch.
    @inlinable
    public static func wallSeconds() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec)
    }
}
