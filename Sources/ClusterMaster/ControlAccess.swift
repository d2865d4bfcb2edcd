import ClusterSystem

/// Who may command the daemon over its control socket: root, the daemon's own user, and members of
/// `controlGroup` (primary or supplementary group). It fails closed: a client whose credentials
/// cannot be read is refused. The readers are injectable so the refusal paths can be tested.
public struct ControlAccess {
    public typealias Credentials = (pid: ProcessID, uid: UserID, gid: GroupID)

    public var daemonUID: UserID
    public var controlGroup: Int?
    /// SO_PEERCRED.
    public var readCredentials: (Int32) throws(SystemError) -> Credentials
    /// SO_PEERGROUPS (asked only when a group is configured and is not the peer's primary one).
    public var readGroups: (Int32) throws(SystemError) -> [GroupID]

    public init(
        daemonUID: UserID, controlGroup: Int?,
        readCredentials: @escaping (Int32) throws(SystemError) -> Credentials = { fd throws(SystemError) in try Socket.peerCredentials(fd) },
        readGroups: @escaping (Int32) throws(SystemError) -> [GroupID] = { fd throws(SystemError) in try Socket.peerGroups(fd) }
    ) {
        self.daemonUID = daemonUID
        self.controlGroup = controlGroup
        self.readCredentials = readCredentials
        self.readGroups = readGroups
    }

    public enum Decision: Equatable {
        case allowed
        /// `log` for the daemon's log, `reply` for the client.
        case refused(log: String, reply: String)
    }

    public func check(_ fd: Int32) -> Decision {
        let peer: Credentials
        do { peer = try readCredentials(fd) } catch {
            return .refused(
                log: "control socket: refused a client whose credentials cannot be read (\(error))",
                reply: "permission denied: the daemon cannot read this client's credentials (\(error.reason))")
        }
        if peer.uid == 0 || peer.uid == daemonUID { return .allowed }
        var groupNote = ""
        if let group = controlGroup {
            if Int(peer.gid) == group { return .allowed }
            do {
                if try readGroups(fd).contains(where: { Int($0) == group }) { return .allowed }
            } catch {
                return .refused(
                    log: "control socket: refused uid \(peer.uid) (pid \(peer.pid)): its groups cannot be read (\(error))",
                    reply: "permission denied: the daemon cannot read the groups of uid \(peer.uid) (\(error.reason))")
            }
            groupNote = ", or a member of group \(group) (controlGroup)"
        }
        return .refused(
            log: "control socket: refused uid \(peer.uid) gid \(peer.gid) (pid \(peer.pid))",
            reply: "permission denied: uid \(peer.uid) (gid \(peer.gid)) may not control this daemon; run clusterctl as uid \(daemonUID) (the daemon's user), root\(groupNote)")
    }
}
