import ClusterControl

/// The session-ticket keys of every TLS listener (`MasterToWorker.ticketKeys`): made here from the
/// kernel's random bytes, so that every worker (and every generation: a reload keeps them) encrypts
/// and accepts the same tickets, and a client resumes on whichever worker the kernel gives it.
/// Every `rotation` a new key takes over issuing tickets; the one before it is still accepted for
/// one more period, so a ticket issued just before a rotation still decrypts (a session resumes for
/// at most OpenSSL's session timeout, 2 h, whatever the keys). Nothing is written to disk:
/// a restart of the daemon starts with new keys (resumption then falls back to a full handshake).
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
}
