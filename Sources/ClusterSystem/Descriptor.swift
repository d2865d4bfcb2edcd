/// An open file descriptor with exactly one owner, closed (close(2), never retried) when the owner
/// is done with it, unless handed on with `take()`. ~Copyable, as `Epoll` is: a second owner of
/// the same number cannot be made, so neither a double close nor a leak on an error path can be
/// written (swift-system's `FileDescriptor`, with the ownership the compiler checks).
public struct Descriptor: ~Copyable {
    /// The number, for the calls that take one; valid while this owner lives.
    public let rawValue: Int32

    /// Becomes the owner of `rawValue`, an open descriptor nobody else will close.
    public init(taking rawValue: Int32) {
        precondition(rawValue >= 0, "Descriptor(taking: \(rawValue)): not a descriptor")
        self.rawValue = rawValue
    }

    deinit { Sys.close(rawValue) }

    /// Hands the descriptor to a new owner (one that will close it); this one no longer does.
    public consuming func take() -> Int32 {
        let fd = rawValue
        discard self
        return fd
    }
}

/// Descriptors owned as a batch (a Swift Array cannot hold a ~Copyable `Descriptor`), e.g. the
/// connections taken from a listener's queue: each is handed on, in order, as a `Descriptor` by
/// `next()`, and those never handed on are closed with the list.
public struct DescriptorList: ~Copyable {
    private var fds: [Int32] = []
    /// How many of `fds`, from the front, were handed on.
    private var handedOn = 0

    public init() {}

    /// Descriptors not handed on yet.
    public var count: Int { fds.count - handedOn }
    /// Their numbers, for the calls that take them; valid while this list owns them.
    public var rawValues: [Int32] { Array(fds[handedOn...]) }
    public var isEmpty: Bool { count == 0 }

    public mutating func append(_ descriptor: consuming Descriptor) {
        fds.append(descriptor.take())
    }

    public mutating func append(contentsOf other: consuming DescriptorList) {
        while let descriptor = other.next() { append(descriptor) }
    }

    /// The next descriptor, in the order they were appended, for its new owner; nil at the end.
    public mutating func next() -> Descriptor? {
        guard handedOn < fds.count else { return nil }
        handedOn += 1
        return Descriptor(taking: fds[handedOn - 1])
    }

    deinit {
        for fd in fds[handedOn...] { Sys.close(fd) }
    }
}
