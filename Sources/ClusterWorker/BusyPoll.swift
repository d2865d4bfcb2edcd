/// A choice the worker makes again and again that pays only some of the time, such as reading a
/// connection right after accepting it or polling before sleeping: each outcome is scored (`gain`
/// when it paid, `loss` when it did not, within ±`bound`), the worker tries while the score is not
/// negative, and below zero it still tries every `probeEvery`-th time, so it notices when the
/// traffic changes. With gain 1 and loss 3 it keeps trying only while three tries in four pay.
public struct AdaptiveChoice: Sendable {
    public let gain: Int8
    public let loss: Int8
    public let bound: Int8
    /// A power of two.
    public let probeEvery: UInt32
    public private(set) var score: Int8 = 0
    private var turns: UInt32 = 0

    public init(gain: Int8, loss: Int8, bound: Int8, probeEvery: UInt32) {
        precondition(probeEvery > 0 && probeEvery & (probeEvery - 1) == 0, "probeEvery must be a power of two")
        self.gain = gain
        self.loss = loss
        self.bound = bound
        self.probeEvery = probeEvery
    }

    /// Whether to try this time.
    public mutating func shouldTry() -> Bool {
        turns &+= 1
        return score >= 0 || turns & (probeEvery - 1) == 0
    }

    /// The outcome of a try.
    public mutating func record(paid: Bool) {
        score = paid ? min(bound, score + gain) : max(-bound, score - loss)
    }
}

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
    private var choice = AdaptiveChoice(gain: 1, loss: 3, bound: 16, probeEvery: 32)
    /// -16...16; polls while >= 0.
    public var score: Int8 { choice.score }

    public init(windowMicroseconds: Int) {
        windowNanoseconds = UInt64(max(0, windowMicroseconds)) * 1000
    }

    /// Whether to poll before sleeping, after a turn that handled events.
    public mutating func shouldPoll() -> Bool {
        windowNanoseconds > 0 && choice.shouldTry()
    }

    /// The outcome of a poll: it found an event, or ran out its window.
    public mutating func record(foundEvent: Bool) {
        choice.record(paid: foundEvent)
    }
}
