import ClusterControl

/// The session-ticket keys of every TLS listener (`MasterToWorker.ticketKeys`): made here from the
/// kernel's random bytes, so that every worker (and every generation: a reload keeps them) encrypts
/// and accepts the same tickets, and a client resumes on whichever worker the kernel gives it.
/// Every `rotation` a new key takes over issuing tickets; the one before it is still accepted for
/// one more period, so a ticket issued just before a rotation still decrypts (a session resumes for
/// at most OpenSSL's session timeout, 2 h, whatever the keys). Nothing is written to disk: the ring
/// outlives a master only in memory, as a memfd in systemd's fd store (`systemctl restart`, a crash
/// restart) and in the upgrade state (`clusterctl upgrade`); a stop, or a start without the store,
/// begins with new keys (resumption then falls back to a full handshake).
struct TicketKeyRing: Equatable {
    /// How long a key issues tickets (12 h: a stolen key's window stays short, and with the previous
    /// key kept, no ticket within its 2 h lifetime is ever refused for its key).
    static let rotation: Int64 = 12 * 3600 * 1000
    static let kept = 2

    /// The keys, the current first, `MasterToWorker.ticketKeyBytes` each.
    private(set) var keys: [UInt8]
    private(set) var rotatedAt: Int64

    init<E: Error>(now: Int64, random: (Int) throws(E) -> [UInt8]) throws(E) {
        keys = try random(MasterToWorker.ticketKeyBytes)
        rotatedAt = now
    }

    /// Makes a new current key when the period is over; true when it did (send the keys again).
    mutating func rotateIfDue<E: Error>(now: Int64, random: (Int) throws(E) -> [UInt8]) throws(E) -> Bool {
        guard now - rotatedAt >= Self.rotation else { return false }
        let fresh = try random(MasterToWorker.ticketKeyBytes)
        keys = Array((fresh + keys).prefix(Self.kept * MasterToWorker.ticketKeyBytes))
        rotatedAt = now
        return true
    }

    var message: MasterToWorker { .ticketKeys(keys) }

    static let magic: [UInt8] = Array("clusterd-ticket-keys-1\n".utf8)

    /// The ring as bytes for a memfd: a magic line, when the current key took over (the monotonic
    /// clock in milliseconds, which runs on across processes until the machine reboots, and a
    /// reboot empties every store), then the keys.
    var serialized: [UInt8] {
        var bytes = Self.magic
        withUnsafeBytes(of: rotatedAt.littleEndian) { bytes.append(contentsOf: $0) }
        return bytes + keys
    }

    /// A ring read back; nil for anything but what `serialized` makes (a wrong magic, a length that
    /// is not one to `kept` whole keys). A rotation time in the future (another boot's clock) counts
    /// as now.
    init?(serialized bytes: [UInt8], now: Int64) {
        let head = Self.magic.count + 8
        let keyBytes = bytes.count - head
        guard bytes.count > head, bytes.starts(with: Self.magic), keyBytes % MasterToWorker.ticketKeyBytes == 0,
              keyBytes / MasterToWorker.ticketKeyBytes <= Self.kept else { return nil }
        var at: Int64 = 0
        for i in (0..<8).reversed() { at = at << 8 | Int64(bytes[Self.magic.count + i]) }
        keys = Array(bytes[head...])
        rotatedAt = at <= now ? at : now
    }
}
