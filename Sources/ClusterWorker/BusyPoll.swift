/// When a worker that just served something should poll for its next event a little before it
/// goes to sleep in `epoll_wait` (`busyPoll` in the config).
///
/// Sleeping costs twice: the worker's own switch out and back in, and the wake-up, which the kernel
/// does on the CPU that delivers the next packet (on loopback, the client's). Under a steady stream
/// of requests the next event often comes a few microseconds after the last one was answered; then
/// polling for it (`epoll_wait` with a zero timeout, yielding the CPU between polls to anything else
/// runnable) is cheaper than sleeping. When events come further apart, the polling would be wasted,
/// so each poll's outcome is scored: one that found an event counts +1, one that ran out counts -3,
/// and below zero the worker sleeps at once (probing again every 32nd turn). Polling therefore
/// keeps on only while at least three polls in four pay, which with random arrivals means events
/// closer than the window most of the time: a busy worker.
public struct BusyPollPolicy: Sendable {
    /// How long a poll may last, in nanoseconds; 0: never poll.
    public let windowNanoseconds: UInt64
    /// -16...16; polls while >= 0.
    public private(set) var score: Int8 = 0
    private var turns: UInt32 = 0

    public init(windowMicroseconds: Int) {
        windowNanoseconds = UInt64(max(0, windowMicroseconds)) * 1000
    }

    /// Whether to poll before sleeping, after a turn that handled events.
    public mutating func shouldPoll() -> Bool {
        guard windowNanoseconds > 0 else { return false }
        turns &+= 1
        return score >= 0 || turns & 31 == 0
    }

    /// The outcome of a poll: it found an event, or ran out its window.
    public mutating func record(foundEvent: Bool) {
        score = foundEvent ? min(16, score + 1) : max(-16, score - 3)
    }
}
