import Testing
import ClusterWorker

@Suite struct BusyPollPolicyTests {
    @Test func offNeverPolls() {
        var p = BusyPollPolicy(windowMicroseconds: 0)
        for _ in 0..<100 {
            let poll = p.shouldPoll()
            #expect(!poll)
        }
    }

    @Test func keepsPollingWhilePollsFindEvents() {
        var p = BusyPollPolicy(windowMicroseconds: 20)
        #expect(p.windowNanoseconds == 20_000)
        for _ in 0..<1000 {
            let poll = p.shouldPoll()
            #expect(poll)
            p.record(foundEvent: true)
        }
        #expect(p.score == 16)
    }

    @Test func stopsWhenPollsRunOutAndProbesEvery32ndTurn() {
        var p = BusyPollPolicy(windowMicroseconds: 20)
        let first = p.shouldPoll()
        #expect(first)
        p.record(foundEvent: false)
        #expect(p.score == -3)
        var polled = 0
        for _ in 0..<320 where p.shouldPoll() {
            polled += 1
            p.record(foundEvent: false)
        }
        #expect(polled == 10)
        #expect(p.score == -16)
    }

    /// One poll in two paying is not enough: each miss wastes the whole window, a hit saves a
    /// sleep and a wake-up. Three in four keeps it on.
    @Test func needsThreeHitsInFour() {
        var half = BusyPollPolicy(windowMicroseconds: 20)
        var polled = 0
        for i in 0..<640 where half.shouldPoll() {
            polled += 1
            half.record(foundEvent: i % 2 == 0)
        }
        #expect(half.score < 0)
        #expect(polled < 64)

        var most = BusyPollPolicy(windowMicroseconds: 20)
        for i in 0..<640 {
            let poll = most.shouldPoll()
            #expect(poll)
            most.record(foundEvent: i % 4 != 3)
        }
        #expect(most.score >= 0)
    }

    /// The optimistic read at accept: +1 / -1 within ±8, probing every 16th connection.
    @Test func optimisticReadBacksOffAndComesBack() {
        var read = AdaptiveChoice(gain: 1, loss: 1, bound: 8, probeEvery: 16)
        var tried = 0
        for _ in 0..<160 where read.shouldTry() {
            tried += 1
            read.record(paid: false)
        }
        #expect(read.score == -8)
        #expect(tried == 1 + 10)  // the first, then the probes at turns 16, 32, … 160
        // The requests start coming with the handshake: the probes pay and it reads every time again.
        var turns = 0
        while read.score < 0 {
            turns += 1
            if read.shouldTry() { read.record(paid: true) }
        }
        #expect(turns == 8 * 16)
        let again = read.shouldTry()
        #expect(again)
    }
}

