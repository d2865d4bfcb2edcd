import ClusterControl
import ClusterSystem
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

    /// Across a restart (systemd's fd store) or an upgrade (the upgrade state): the keys and when
    /// the current one took over come back as they were, so the schedule goes on.
    @Test func survivesItsSerialisation() throws {
        let source = Source()
        var ring = TicketKeyRing(now: 1_000, random: source.bytes)
        _ = ring.rotateIfDue(now: 1_000 + TicketKeyRing.rotation, random: source.bytes)
        let back = try #require(TicketKeyRing(serialized: ring.serialized, now: 5 + TicketKeyRing.rotation * 2))
        #expect(back == ring)
        // A clock from another boot (later than now) counts as now.
        let early = try #require(TicketKeyRing(serialized: ring.serialized, now: 10))
        #expect(early.keys == ring.keys && early.rotatedAt == 10)
    }

    @Test(arguments: [0, 1, 22, 23, 31, 32, 33])
    func refusesWhatItDidNotWrite(cut: Int) {
        let ring = TicketKeyRing(now: 7, random: Source().bytes)
        var bytes = ring.serialized
        // Cut short (a key's part missing, or only the head), or a wrong magic.
        let short = Array(bytes.prefix(cut))
        #expect(TicketKeyRing(serialized: short, now: 100) == nil)
        bytes[0] ^= 1
        #expect(TicketKeyRing(serialized: bytes, now: 100) == nil)
        // Three keys: more than it ever keeps.
        #expect(TicketKeyRing(serialized: ring.serialized + ring.keys + ring.keys, now: 100) == nil)
        #expect(TicketKeyRing(serialized: ring.serialized + [1], now: 100) == nil)
    }

    @Test func theUpgradeStatesHexRoundTrips() {
        let bytes: [UInt8] = [0, 1, 0xab, 0xff, 0x10]
        #expect(Hex.encode(bytes) == "0001abff10")
        #expect(Hex.decode("0001abff10") == bytes)
        #expect(Hex.decode("0") == nil)
        #expect(Hex.decode("zz") == nil)
        #expect(Hex.decode("AB") == nil)
    }
}
