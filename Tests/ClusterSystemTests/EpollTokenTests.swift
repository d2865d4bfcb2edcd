import ClusterSystem
import Testing

/// One encoding of epoll user data for every loop (issue 13 item 8).
@Suite struct EpollTokens {
    @Test func roundTrip() {
        for (kind, generation, fd) in [(UInt8(1), UInt32(0), Int32(0)), (2, 0xFF_FFFF, Int32.max), (255, 12345, 7), (4, 0, 3)] {
            let token = Epoll.Token(kind: kind, generation: generation, fd: fd)
            #expect(Epoll.Token(data: token.data) == token)
        }
    }

    /// The layout both the worker and the master rely on: kind in the top byte, 24 bits of
    /// generation, the descriptor in the low 32 bits; a wider generation keeps its low 24 bits.
    @Test func layout() {
        #expect(Epoll.Token(kind: 2, generation: 0x12_345678, fd: 9).data == 0x0234_5678_0000_0009)
        #expect(Epoll.Token(kind: 2, generation: 0x12_345678, fd: 9).generation == 0x34_5678)
        #expect(Epoll.Token(data: 0x0400_0000_0000_0005) == Epoll.Token(kind: 4, fd: 5))
    }
}
