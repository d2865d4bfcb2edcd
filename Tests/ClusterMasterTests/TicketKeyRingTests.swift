import ClusterControl
import Testing

@testable import ClusterMaster

@Suite struct TicketKeyRingTests {
    /// Deterministic "random" bytes: each call a new fill byte.
    final class Source {
        var next: UInt8 = 1
        func bytes(_ n: Int) -> [UInt8] {
            defer { next += 1 }
            return [UInt8](repeating: next, count: n)
        }
    }

    @Test func oneKeyAtStartThenCurrentAndPreviousOnSchedule() {
        let source = Source()
        var ring = TicketKeyRing(now: 0, random: source.bytes)
        #expect(ring.keys == [UInt8](repeating: 1, count: 80))
        var rotated = ring.rotateIfDue(now: TicketKeyRing.rotation - 1, random: source.bytes)
        #expect(!rotated)
        rotated = ring.rotateIfDue(now: TicketKeyRing.rotation, random: source.bytes)
        #expect(rotated)
        #expect(ring.keys == [UInt8](repeating: 2, count: 80) + [UInt8](repeating: 1, count: 80))
        rotated = ring.rotateIfDue(now: 2 * TicketKeyRing.rotation, random: source.bytes)
        #expect(rotated)
        // The oldest goes: a ticket lives one to two periods.
        #expect(ring.keys == [UInt8](repeating: 3, count: 80) + [UInt8](repeating: 2, count: 80))
        #expect(ring.message == .ticketKeys(ring.keys))
    }
}
