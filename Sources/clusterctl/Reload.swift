import ArgumentParser
import ClusterControl

struct Reload: ControlCommand {
    static let configuration = CommandConfiguration(
        abstract: "Re-read the config and replace the workers gracefully.",
        discussion: "A config that does not validate leaves the running generation serving; the error is printed and the exit code is 1.")

    @OptionGroup var options: ChangeOptions
    @ParentCommand var root: Clusterctl
    var connection: ConnectionOptions { options.connection }

    func run() throws {
        let answer = try send(.reload(wait: options.wait))
        let generation = answer["generation"]?.intValue ?? 0
        print(options.wait ? "reloaded: generation \(generation) serving with \(answer["workers"]?.intValue ?? 0) workers" : "reload started: generation \(generation)")
    }
}

/// What the commands that replace or add workers (reload, scale) take: where the daemon is, and
/// whether to wait for the new workers.
struct ChangeOptions: ParsableArguments {
    @OptionGroup var connection: ConnectionOptions

    @Flag(name: .long, help: "Wait until the new workers are ready (or the change failed), not just started.")
    var wait = false
}

struct Stop: ControlCommand {
    static let configuration = CommandConfiguration(abstract: "Stop the daemon (graceful: drain connections first).")

    @OptionGroup var connection: ConnectionOptions
    @ParentCommand var root: Clusterctl

    @Flag(name: .long, help: "Stop at once instead of draining.")
    var fast = false

    func run() throws {
        _ = try send(.stop(graceful: !fast))
        print(fast ? "stopping" : "stopping (draining)")
    }
}

struct ReopenLogs: ControlCommand {
    static let configuration = CommandConfiguration(commandName: "reopen-logs", abstract: "Reopen log files (after logrotate).")

    @OptionGroup var connection: ConnectionOptions
    @ParentCommand var root: Clusterctl

    func run() throws {
        _ = try send(.reopenLogs)
        print("logs reopened")
    }
}
