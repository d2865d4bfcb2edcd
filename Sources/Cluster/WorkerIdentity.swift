import ClusterConfig
import ClusterSystem

/// The config's `user` and `group` resolved to the ids the workers switch to (nil: they stay the
/// master's). Run by `ConfigCheck` (so `--check-config`, start-up and reload refuse a user that does
/// not exist or a switch the master could not make) and by each worker before it serves.
enum WorkerIdentity {
    static func resolve(_ config: ClusterConfiguration) throws(ConfigError) -> (uid: UserID, gid: GroupID)? {
        guard let user = config.user else { return nil }
        func fail(_ key: String, _ message: String) -> ConfigError { ConfigError(file: config.source, keyPath: key, message: message) }
        var uid: UserID
        var primary: GroupID?
        switch user {
        case .name(let name):
            guard let found = Identity.user(named: name) else { throw fail("user", "no user \"\(name)\" in the user database") }
            (uid, primary) = (found.uid, found.gid)
        case .id(let id):
            uid = UserID(id)
            primary = Identity.primaryGroup(of: uid)
        }
        let gid: GroupID
        switch config.group {
        case .name(let name)?:
            guard let found = Identity.group(named: name) else { throw fail("group", "no group \"\(name)\" in the group database") }
            gid = found
        case .id(let id)?:
            gid = GroupID(id)
        case nil:
            guard let primary else { throw fail("group", "user \(user) has no entry in the user database to take a group from: name the group") }
            gid = primary
        }
        if uid == Identity.effectiveUser && !Identity.maySwitchUser {
            // Already that user; a group other than the master's cannot be taken without privilege.
            guard gid == Identity.effectiveGroup else {
                throw fail("group", "switching the workers to gid \(gid) needs the master to run as root with CAP_SETGID; it runs as uid \(Identity.effectiveUser), gid \(Identity.effectiveGroup)")
            }
            return nil
        }
        guard Identity.maySwitchUser else {
            throw fail("user", "switching the workers to uid \(uid) needs the master to run as root with CAP_SETUID and CAP_SETGID (under systemd: in CapabilityBoundingSet=); it runs as uid \(Identity.effectiveUser)")
        }
        if uid == 0 { return nil }
        return (uid, gid)
    }
}
