import ClusterMaster
import ClusterSystem
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Issue 12 item 11: who the control socket admits, with the credential readers injected.
@Suite struct ControlAccessRules {
    static func access(uid: uid_t, gid: gid_t, groups: [gid_t] = [], group: Int? = nil) -> ControlAccess {
        ControlAccess(
            daemonUID: 1000, controlGroup: group,
            readCredentials: { _ throws(SystemError) in (pid: 42, uid: uid, gid: gid) },
            readGroups: { _ throws(SystemError) in groups })
    }

    /// Before the fix a failed SO_PEERCRED let the client in unchecked.
    @Test func unreadableCredentialsAreRefused() {
        let access = ControlAccess(
            daemonUID: 1000, controlGroup: nil,
            readCredentials: { _ throws(SystemError) in throw SystemError(call: "getsockopt(SO_PEERCRED)", errno: ENOPROTOOPT) },
            readGroups: { _ throws(SystemError) in [] })
        guard case .refused(let log, let reply) = access.check(7) else {
            Issue.record("admitted a client whose credentials could not be read")
            return
        }
        #expect(reply.hasPrefix("permission denied: the daemon cannot read this client's credentials"))
        #expect(log.contains("SO_PEERCRED"))
    }

    @Test func unreadableGroupsAreRefused() {
        let access = ControlAccess(
            daemonUID: 1000, controlGroup: 50,
            readCredentials: { _ throws(SystemError) in (pid: 42, uid: 2000, gid: 2000) },
            readGroups: { _ throws(SystemError) in throw SystemError(call: "getsockopt(SO_PEERGROUPS)", errno: ENOPROTOOPT) })
        #expect(access.check(7) != .allowed)
    }

    @Test func rootOwnUserAndGroupMembersAreAdmitted() {
        #expect(Self.access(uid: 0, gid: 0).check(7) == .allowed)
        #expect(Self.access(uid: 1000, gid: 1000).check(7) == .allowed)
        #expect(Self.access(uid: 2000, gid: 50, group: 50).check(7) == .allowed)
        // A member through a supplementary group (before the fix only the primary gid counted).
        #expect(Self.access(uid: 2000, gid: 2000, groups: [7, 50], group: 50).check(7) == .allowed)
    }

    @Test func othersAreRefusedWithWhatToDo() {
        #expect(Self.access(uid: 2000, gid: 2000, groups: [7]).check(7) != .allowed)
        guard case .refused(_, let reply) = Self.access(uid: 2000, gid: 2000, groups: [7], group: 50).check(7) else {
            Issue.record("admitted a stranger")
            return
        }
        #expect(reply == "permission denied: uid 2000 (gid 2000) may not control this daemon; run clusterctl as uid 1000 (the daemon's user), root, or a member of group 50 (controlGroup)")
    }

    /// The real SO_PEERGROUPS wrapper on a socketpair: this process's own supplementary groups.
    @Test func peerGroupsOfASocketpair() throws {
        let (a, b) = try Sys.socketpair(type: Int32(SOCK_STREAM.rawValue))
        defer { Sys.close(a); Sys.close(b) }
        let count = getgroups(0, nil)
        var mine = [gid_t](repeating: 0, count: Int(max(count, 0)))
        _ = getgroups(count, &mine)
        #expect(Set(try Socket.peerGroups(a)) == Set(mine))
    }
}
