import ClusterSystem

/// The worker's connections, indexed by socket descriptor (as nginx's `ngx_cycle->files`): a step
/// runs on a connection in place (`table[fd].readable(&io)`), never on a copy written back.
struct ConnectionTable {
    private var slots: [Connection] = []
    /// Connections open now (slots with `fd >= 0`).
    private(set) var openCount = 0
    private var nextGeneration: UInt32 = 1

    init(capacity: Int) {
        slots.reserveCapacity(capacity)
    }

    /// Table size: every open descriptor is below it.
    var endIndex: Int32 { Int32(slots.count) }

    /// The connection on `fd` (which must be below `endIndex`).
    subscript(fd: Int32) -> Connection {
        _read { yield slots[Int(fd)] }
        _modify { yield &slots[Int(fd)] }
    }

    /// Whether `fd` holds the open connection registered with `generation` (an epoll event for a
    /// closed, maybe reused, descriptor is stale).
    @inline(__always)
    func isCurrent(_ fd: Int32, generation: UInt32) -> Bool {
        let index = Int(fd)
        return index >= 0 && index < slots.count && slots[index].fd == fd && slots[index].generation & Epoll.Token.generationMask == generation
    }

    /// Whether `fd` holds an open connection.
    @inline(__always)
    func isOpen(_ fd: Int32) -> Bool {
        let index = Int(fd)
        return index >= 0 && index < slots.count && slots[index].fd == fd
    }

    /// Takes the new connection `fd` in, with a fresh generation, for the caller to set up.
    mutating func open(_ fd: Int32) {
        let index = Int(fd)
        if index >= slots.count {
            slots.append(contentsOf: repeatElement(Connection(), count: index - slots.count + 1 + slots.count / 2))
        }
        nextGeneration = nextGeneration &+ 1
        slots[index].reopen(fd: fd, generation: nextGeneration & Epoll.Token.generationMask)
        openCount += 1
    }

    /// Book-keeping for a connection whose step closed it (`Connection.close`).
    mutating func closed() {
        openCount -= 1
    }
}
