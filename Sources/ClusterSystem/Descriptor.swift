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
