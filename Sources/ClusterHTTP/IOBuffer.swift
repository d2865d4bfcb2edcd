/// A growable byte buffer with a reader and a writer index, over memory it allocates itself: a
/// connection's unparsed input or unsent output, or a worker's scratch space.
///
/// A reference type that owns its memory: `deinit` frees it, so nothing is freed by hand and
/// nothing is freed twice. Copies of a reference share the bytes, as with any class (this is not
/// swift-nio's copy-on-write `ByteBuffer`). The memory is allocated on the first write and never
/// shrinks on its own; `releaseStorage()` gives it back early (an idle keep-alive connection holds
/// an `IOBuffer` but no memory).
///
/// The indices are only ever touched by the one thread that owns the connection, inside short
/// non-overlapping accesses, so they opt out of run-time exclusivity checks (`@exclusivity(unchecked)`):
/// the hot path pays for no access tracking.
public final class IOBuffer {
    @usableFromInline @exclusivity(unchecked) var storage: UnsafeMutableRawPointer?
    @usableFromInline @exclusivity(unchecked) var capacity: Int = 0
    /// First unread byte.
    @exclusivity(unchecked) public var readerIndex: Int = 0
    /// One past the last written byte.
    @exclusivity(unchecked) public var writerIndex: Int = 0

    public init() {}

    public init(capacity: Int) {
        reserveCapacity(capacity)
    }

    deinit { storage?.deallocate() }

    @inlinable public var readableBytes: Int { writerIndex - readerIndex }
    @inlinable public var isEmpty: Bool { writerIndex == readerIndex }
    @inlinable public var allocatedCapacity: Int { capacity }
    @inlinable public var isAllocated: Bool { storage != nil }
    @inlinable public var writableBytes: Int { capacity - writerIndex }

    /// Gives the memory back now rather than at `deinit`. The buffer is empty and unallocated
    /// afterwards and can be used again (the next write allocates).
    public func releaseStorage() {
        storage?.deallocate()
        storage = nil
        capacity = 0
        readerIndex = 0
        writerIndex = 0
    }

    /// Makes room for at least `count` more bytes after `writerIndex`, moving unread bytes to the
    /// front first when that is enough.
    @inlinable
    public func reserveWritable(_ count: Int) {
        if capacity - writerIndex >= count { return }
        growSlowPath(count)
    }

    @usableFromInline
    func growSlowPath(_ count: Int) {
        if readerIndex > 0 && capacity - readableBytes >= count && storage != nil {
            discardReadBytes()
            return
        }
        reserveCapacity(max(writerIndex - readerIndex + count, capacity * 2, 512))
    }

    public func reserveCapacity(_ newCapacity: Int) {
        guard newCapacity > capacity else { return }
        let fresh = UnsafeMutableRawPointer.allocate(byteCount: newCapacity, alignment: 16)
        if let old = storage {
            let live = writerIndex - readerIndex
            if live > 0 { fresh.copyMemory(from: old + readerIndex, byteCount: live) }
            old.deallocate()
            writerIndex = live
            readerIndex = 0
        }
        storage = fresh
        capacity = newCapacity
    }

    /// Moves unread bytes to the front.
    public func discardReadBytes() {
        guard readerIndex > 0, let base = storage else { return }
        let live = writerIndex - readerIndex
        if live > 0 { base.copyMemory(from: base + readerIndex, byteCount: live) }
        readerIndex = 0
        writerIndex = live
    }

    /// Removes the readable bytes at offsets `start..<end` (relative to `readerIndex`), moving the
    /// bytes after them down: a chunked body's framing, once decoded, is dropped this way.
    public func removeReadable(from start: Int, upTo end: Int) {
        precondition(0 <= start && start <= end && end <= readableBytes)
        guard start < end, let base = storage else { return }
        let tail = readableBytes - end
        if tail > 0 { (base + readerIndex + start).copyMemory(from: base + readerIndex + end, byteCount: tail) }
        writerIndex -= end - start
    }

    /// Drops all bytes, keeping the memory.
    @inlinable
    public func clear() {
        readerIndex = 0
        writerIndex = 0
    }

    @inlinable
    public func moveReaderIndex(forwardBy n: Int) {
        precondition(n >= 0 && readerIndex + n <= writerIndex)
        readerIndex += n
        if readerIndex == writerIndex { readerIndex = 0; writerIndex = 0 }
    }

    @inlinable
    public func moveWriterIndex(forwardBy n: Int) {
        precondition(n >= 0 && writerIndex + n <= capacity)
        writerIndex += n
    }

    /// Pointer to where the next write goes (call `reserveWritable` first).
    @inlinable
    public var writePointer: UnsafeMutableRawPointer { storage! + writerIndex }

    @inlinable
    public var readPointer: UnsafeRawPointer { UnsafeRawPointer(storage!) + readerIndex }

    /// The unread bytes. Valid until the next mutation.
    @inlinable
    public var readableView: UnsafeRawBufferPointer {
        guard let base = storage else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return UnsafeRawBufferPointer(start: base + readerIndex, count: writerIndex - readerIndex)
    }

    /// Whole allocated region, for in-place decoding.
    @inlinable
    public var baseAddress: UnsafeMutableRawPointer? { storage }

    @inlinable @inline(__always)
    public func write(_ bytes: UnsafeRawBufferPointer) {
        let n = bytes.count
        guard n > 0 else { return }
        reserveWritable(n)
        (storage! + writerIndex).copyMemory(from: bytes.baseAddress!, byteCount: n)
        writerIndex += n
    }

    @inlinable @inline(__always)
    public func write(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { write($0) }
    }

    @inlinable @inline(__always)
    public func write(_ string: StaticString) {
        write(UnsafeRawBufferPointer(start: string.utf8Start, count: string.utf8CodeUnitCount))
    }

    @inlinable @inline(__always)
    public func write(string: String) {
        var s = string
        s.withUTF8 { write(UnsafeRawBufferPointer($0)) }
    }

    @inlinable
    public func writeByte(_ byte: UInt8) {
        reserveWritable(1)
        storage!.storeBytes(of: byte, toByteOffset: writerIndex, as: UInt8.self)
        writerIndex += 1
    }

    /// `value` (not negative) in lowercase hexadecimal without allocating (a chunk size).
    public func writeHex(_ value: Int) {
        reserveWritable(16)
        var shift = 60
        while shift > 0 && (value >> shift) & 0xF == 0 { shift -= 4 }
        while shift >= 0 {
            let d = UInt8((value >> shift) & 0xF)
            writeByte(d < 10 ? 0x30 + d : 0x57 + d)
            shift -= 4
        }
    }

    /// Writes `value` in decimal without allocating.
    @inlinable
    public func writeDecimal(_ value: Int) {
        reserveWritable(20)
        var v = value.magnitude
        if value < 0 { writeByte(UInt8(ascii: "-")) }
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)
        let count: Int = withUnsafeMutableBytes(of: &digits) { tmp in
            var i = 24
            repeat {
                i -= 1
                tmp[i] = UInt8(truncatingIfNeeded: v % 10) &+ 48
                v /= 10
            } while v > 0
            let n = 24 - i
            (storage! + writerIndex).copyMemory(from: tmp.baseAddress! + i, byteCount: n)
            return n
        }
        writerIndex += count
    }

    /// Copies the readable bytes (tests and slow paths).
    public var readableArray: [UInt8] { Array(readableView) }
}
