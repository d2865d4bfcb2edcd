import ArgumentParser
import ClusterControl

struct Reload: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Re-read the config and replace the workers gracefully.",
        discussion: "A config that does not validate leaves the running generation serving; the error is printed and the exit code is 1.")

    @OptionGroup var connection: ConnectionOptions

    @Flag(name: .long, help: "Wait until the new generation serves (or the reload failed).")
    var wait = false

    func run() throws {
        let answer = try connection.send(.reload(wait: wait))
        let generation = answer["generation"]?.intValue ?? 0
        print(wait ? "reloaded: generation \(generation) serving with \(answer["workers"]?.intValue ?? 0) workers" : "reload started: generation \(generation)")
    }
}

struct Stop: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Stop the daemon (graceful: drain connections first).")

    @OptionGroup var connection: ConnectionOptions

    @Flag(name: .long, help: "Stop at once instead of draining.")
    var fast = false

    func run() throws {
        _ = try connection.send(.stop(graceful: !fast))
        print(fast ? "stopping" : "stopping (draining)")
    }
}

struct ReopenLogs: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "reopen-logs", abstract: "Reopen log files (after logrotate).")

    @OptionGroup var connection: ConnectionOptions

    func run() throws {
        _ = try connection.send(.reopenLogs)
        print("logs reopened")
    }
}
