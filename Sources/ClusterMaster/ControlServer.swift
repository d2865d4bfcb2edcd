import ClusterControl
import ClusterJSON

/// The control socket's protocol: newline-delimited JSON between clients and the master. A value
/// with no syscalls: the master (`Master+Control.swift`) accepts clients, reads their bytes into
/// it (`received`), takes decoded requests out with an id (`nextRequest`), gives it the replies
/// (`reply`) and sends what it has queued (`output`, `sent`). Every client is bounded — line
/// length, unsent replies (back-pressure: its lines wait while its replies pile up), time — so no
/// client can stall or grow the master. Tested alone in `ControlServerTests`.
public struct ControlServer {
    public static let maxClients = 32
    /// A client with this many reply bytes unsent is not read from until they drain below it
    /// (back-pressure, as the workers do for HTTP): one client holds at most this plus one reply
    /// plus two request lines.
    public static let maxPendingReplyBytes = 64 * 1024
    /// A client whose unsent replies make no progress for this long is dropped.
    public static let replyStallTimeout: Int64 = 10_000
    /// A client that never finishes a line (and waits for no answer) is dropped after this.
    public static let idleTimeout: Int64 = 60_000
    public static let acceptBackoff: Int64 = 100
    public static let acceptLogInterval: Int64 = 5_000

    /// A client, by its descriptor (the master's id for it).
    public typealias ClientID = Int32

    struct Client {
        var input: [UInt8] = []
        var output: [UInt8] = []
        var closeAfterWrite = false
        var openedAt: Int64
        /// When its replies last moved (sent bytes, or started to wait): see `replyStallTimeout`.
        var lastProgressAt: Int64
    }

    /// What `nextRequest` found in a client's input.
    public enum Line: Equatable {
        /// A request to answer with `reply(id, …)`.
        case request(RequestID, ControlRequest)
        /// A line answered here (it did not decode, or was too long); nothing for the master to do.
        case answered
    }

    public let path: String
    /// The group whose members may command the daemon too (`controlGroup`).
    public let group: Int?
    var clients: [ClientID: Client] = [:]
    var requests: [RequestID: ClientID] = [:]
    var nextID: RequestID = 1
    /// Accept failures (out of descriptors) not logged yet, and when the last was.
    var acceptFailuresSinceLog = 0
    var lastAcceptLogAt: Int64? = nil

    public init(path: String, group: Int?) {
        self.path = path
        self.group = group
    }

    public var clientCount: Int { clients.count }
    public var isFull: Bool { clients.count >= Self.maxClients }
    public func has(_ client: ClientID) -> Bool { clients[client] != nil }

    public mutating func opened(_ client: ClientID, now: Int64) {
        clients[client] = Client(openedAt: now, lastProgressAt: now)
    }

    /// Forgets a client (the master closes its descriptor); its unanswered requests are dropped.
    public mutating func closed(_ client: ClientID) {
        guard clients.removeValue(forKey: client) != nil else { return }
        for (id, owner) in requests where owner == client { requests[id] = nil }
    }

    public mutating func received(_ bytes: some Sequence<UInt8>, from client: ClientID) {
        clients[client]?.input.append(contentsOf: bytes)
    }

    /// The next complete request line of `client` while its unsent replies stay under
    /// `maxPendingReplyBytes`; nil when there is none (or it must wait for its replies to drain).
    /// A line that does not decode, or is too long, is answered here with an error (too long: the
    /// client is closed after it).
    public mutating func nextRequest(from client: ClientID, now: Int64) -> Line? {
        while let c = clients[client], !c.closeAfterWrite, c.output.count < Self.maxPendingReplyBytes {
            guard let newline = c.input.firstIndex(of: 0x0A) else {
                if c.input.count > ControlRequest.maxLineBytes {
                    refuse(client, "request too long (limit \(ControlRequest.maxLineBytes) bytes)", now: now)
                    return .answered
                }
                return nil
            }
            var line = Array(c.input[..<newline])
            clients[client]!.input.removeSubrange(...newline)
            if line.last == 0x0D { line.removeLast() }
            if line.isEmpty { continue }
            if line.count > ControlRequest.maxLineBytes {
                refuse(client, "request too long (limit \(ControlRequest.maxLineBytes) bytes)", now: now)
                return .answered
            }
            switch ControlRequest.decode(line) {
            case .failure(let e):
                queue(ControlResponse.error(e.message), to: client, now: now)
                return .answered
            case .success(let request):
                let id = nextID
                nextID += 1
                requests[id] = client
                return .request(id, request)
            }
        }
        // Held back by its replies: a line already longer than allowed is refused all the same.
        if let c = clients[client], !c.closeAfterWrite, c.input.count > ControlRequest.maxLineBytes, !c.input.contains(0x0A) {
            refuse(client, "request too long (limit \(ControlRequest.maxLineBytes) bytes)", now: now)
            return .answered
        }
        return nil
    }

    /// Queues the answer to request `id`; returns its client (to send to), or nil if it is gone.
    @discardableResult
    public mutating func reply(_ id: RequestID, _ response: JSON, now: Int64) -> ClientID? {
        guard let client = requests.removeValue(forKey: id), clients[client] != nil else { return nil }
        queue(response, to: client, now: now)
        return client
    }

    /// Answers with an error and closes the client once it is sent.
    mutating func refuse(_ client: ClientID, _ message: String, now: Int64) {
        queue(ControlResponse.error(message), to: client, now: now)
        clients[client]?.closeAfterWrite = true
    }

    mutating func queue(_ response: JSON, to client: ClientID, now: Int64) {
        guard clients[client] != nil else { return }
        if clients[client]!.output.isEmpty { clients[client]!.lastProgressAt = now }
        clients[client]!.output += Array((response.serialized + "\n").utf8)
    }

    /// What `client` has queued to send.
    public func output(of client: ClientID) -> [UInt8] { clients[client]?.output ?? [] }

    /// `count` bytes of `client`'s output went out.
    public mutating func sent(_ count: Int, to client: ClientID, now: Int64) {
        guard clients[client] != nil, count > 0 else { return }
        clients[client]!.output.removeFirst(min(count, clients[client]!.output.count))
        clients[client]!.lastProgressAt = now
    }

    /// Whether the master should close `client` now: everything it was owed after a refusal is sent.
    public func isDone(_ client: ClientID) -> Bool {
        guard let c = clients[client] else { return false }
        return c.closeAfterWrite && c.output.isEmpty
    }

    /// Whether to read from `client` (its replies are under the cap, and it is not being closed),
    /// and whether to wait to write to it (replies are unsent).
    public func interest(of client: ClientID) -> (read: Bool, write: Bool) {
        guard let c = clients[client] else { return (false, false) }
        return (c.output.count < Self.maxPendingReplyBytes && !c.closeAfterWrite, !c.output.isEmpty)
    }

    /// Clients to drop at `now`, with why: their replies made no progress for `replyStallTimeout`,
    /// or they never finished a line in `idleTimeout` and wait for no answer.
    public func expired(now: Int64) -> [(client: ClientID, reason: String?)] {
        var out: [(ClientID, String?)] = []
        for (fd, c) in clients.sorted(by: { $0.key < $1.key }) {
            if !c.output.isEmpty && now - c.lastProgressAt > Self.replyStallTimeout {
                out.append((fd, "control client made no progress reading \(c.output.count) reply bytes for \(Self.replyStallTimeout / 1000) s; closing it"))
            } else if now - c.openedAt > Self.idleTimeout && !requests.values.contains(fd) {
                out.append((fd, nil))
            }
        }
        return out
    }

    /// An accept failed: the line to log, at most once per `acceptLogInterval` (saying how many
    /// failures it stands for), or nil.
    public mutating func acceptFailed(_ message: String, now: Int64) -> String? {
        acceptFailuresSinceLog += 1
        if let last = lastAcceptLogAt, now - last < Self.acceptLogInterval { return nil }
        let more = acceptFailuresSinceLog - 1
        acceptFailuresSinceLog = 0
        lastAcceptLogAt = now
        return "\(message)\(more > 0 ? " (\(more) more since the last report)" : "")"
    }
}
