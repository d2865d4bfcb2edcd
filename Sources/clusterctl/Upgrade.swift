import ArgumentParser
import ClusterControl
import ClusterJSON
import ClusterSystem

struct Upgrade: ControlCommand {
    static let configuration = CommandConfiguration(
        abstract: "Switch to the clusterd binary now installed at the daemon's path, losing no request.",
        discussion: """
            The master checks the new binary (it must start and accept the running config), then re-executes \
            itself in place (same PID, listeners, control socket and stats kept) and replaces the workers as a \
            reload does. If the check or the re-exec fails, the old master carries on and this fails with the \
            reason (exit 1). Succeeds, doing nothing, when the binary on disk is the running build. Waits until \
            every worker of the old build has left (at most --timeout seconds, default 60).
            """)

    @OptionGroup var connection: ConnectionOptions
    @ParentCommand var root: Clusterctl

    func run() throws {
        let answer = try send(.upgrade)
        let build = answer["build"]?.stringValue ?? ""
        guard answer["upgrading"]?.boolValue == true else {
            print("already running build \(build.isEmpty ? "(none)" : build): nothing to upgrade")
            return
        }
        // The master re-executes: its socket refuses or drops us for a moment. Poll its status
        // until the new build serves alone, or the master reports why it could not.
        let seconds = resolvedConnection.timeout ?? 60
        let deadline = Clock.monotonicMilliseconds() + Int64(seconds) * 1000
        var last = "no answer"
        while Clock.monotonicMilliseconds() < deadline {
            Sys.sleep(milliseconds: 100)
            guard let status = quietStatus() else { continue }
            if let error = status["lastUpgradeError"]?.stringValue, status["build"]?.stringValue != build {
                Sys.printError("clusterctl: upgrade failed: \(error)")
                throw ExitCode(1)
            }
            let state = status["state"]?.stringValue ?? "?"
            let draining = status["draining"]?.intValue ?? -1
            last = "build \(status["build"]?.stringValue ?? "?"), \(state), \(draining) worker(s) draining"
            if status["build"]?.stringValue == build && state == "running" && draining == 0 {
                print("upgraded: build \(build) serving, generation \(status["generation"]?.intValue ?? 0), \(status["workers"]?.intValue ?? 0) workers, pid \(status["pid"]?.intValue ?? 0)")
                return
            }
        }
        Sys.printError("clusterctl: upgrade not finished after \(seconds) s (\(last)); see `clusterctl status`")
        throw ExitCode(1)
    }

    /// The daemon's status, or nil while it cannot answer (re-executing), without printing why.
    func quietStatus() -> JSONObject? {
        guard let location = try? resolvedConnection.location(),
              let response = try? ControlClient(path: location.path, timeout: 5).send(.status),
              case .object(let o) = response, o["ok"]?.boolValue == true else { return nil }
        return o
    }
}
