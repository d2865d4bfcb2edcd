import ArgumentParser
import ClusterConfig
import ClusterControl
import ClusterJSON
import ClusterSystem

@main
struct Clusterctl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "clusterctl",
        abstract: "Control a running clusterd through its control socket.",
        usage: "clusterctl [--socket <path> | --config <file>] [--timeout <seconds>] <subcommand>",
        discussion: """
            The socket is --socket, else controlSocket in the --config file, else $CLUSTERD_SOCKET,
            else controlSocket in /etc/clusterd/clusterd.json when that file exists, else
            /run/clusterd/control.sock.
            Exit codes: 0 done, 1 the daemon refused or the command failed, 3 the daemon cannot be
            reached, 4 the daemon's answer made no sense, 64 bad usage (or an unreadable --config).
            """,
        version: ClusterVersion.string,
        subcommands: [Status.self, Workers.self, Top.self, Scale.self, Reload.self, Upgrade.self, Stop.self, ReopenLogs.self])

    /// The connection options given before the subcommand (`clusterctl --socket PATH status`, as
    /// operators write it); those given after it take precedence (`ControlCommand.send`).
    @OptionGroup var connection: ConnectionOptions
}

/// A subcommand that talks to the daemon: its connection options are those given after its name,
/// over those given before it.
protocol ControlCommand: ParsableCommand {
    var connection: ConnectionOptions { get }
    var root: Clusterctl { get }
}

extension ControlCommand {
    /// The connection options given after the subcommand, over those given before it.
    var resolvedConnection: ConnectionOptions { connection.over(root.connection) }

    func send(_ request: ControlRequest) throws -> JSONObject { try resolvedConnection.send(request) }
}

/// Options every subcommand takes.
struct ConnectionOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Control socket of the daemon.", valueName: "path"))
    var socket: String?

    @Option(name: .long, help: ArgumentHelp("The daemon's config file: its controlSocket is the socket.", valueName: "file"))
    var config: String?

    @Option(name: .long, help: ArgumentHelp("Seconds to wait for an answer (default: 60).", valueName: "seconds"))
    var timeout: Int?

    func validate() throws {
        if let timeout { guard (1...86_400).contains(timeout) else { throw ValidationError("--timeout must be 1...86400 seconds") } }
    }

    /// These options, each one not given taken from `outer`.
    func over(_ outer: ConnectionOptions) -> ConnectionOptions {
        var merged = self
        merged.socket = socket ?? outer.socket
        merged.config = config ?? outer.config
        merged.timeout = timeout ?? outer.timeout
        return merged
    }

    /// The socket to use and where that path came from.
    func location() throws -> ControlSocketLocation {
        let resolved = ControlSocketLocation.resolve(
            socket: socket, config: config, environment: Sys.environment("CLUSTERD_SOCKET"),
            readFile: { path in
                do throws(SystemError) { return .bytes(try FileIO.readRegularFile(path: path, limit: 4 * 1024 * 1024)) } catch {
                    return error.code == .noSuchFileOrDirectory ? .missing : .failed(error.reason)
                }
            })
        switch resolved {
        case .success(let location): return location
        case .failure(let error):
            Sys.printError("clusterctl: \(error)")
            throw ExitCode(64)
        }
    }

    func send(_ request: ControlRequest) throws -> JSONObject {
        let location = try location()
        let response: JSON
        do {
            response = try ControlClient(path: location.path, timeout: timeout ?? 60).send(request)
        } catch {
            switch error {
            case .connect(let cause):
                Sys.printError("clusterctl: \(Self.unreachable(location, cause))")
                throw ExitCode(3)
            default:
                Sys.printError("clusterctl: \(error)")
                throw ExitCode(4)
            }
        }
        guard case .object(let o) = response, let ok = o["ok"]?.boolValue else {
            Sys.printError("clusterctl: bad response from daemon: \(response.serialized)")
            throw ExitCode(4)
        }
        guard ok else {
            Sys.printError("clusterctl: \(o["error"]?.stringValue ?? "failed")")
            throw ExitCode(1)
        }
        return o
    }

    /// "Cannot reach" and "permission denied" say what to check: is it running, which socket (and
    /// why that one), which user and group may use it.
    static func unreachable(_ location: ControlSocketLocation, _ cause: SystemError) -> String {
        let which = "\(location.path) (\(location.source))"
        let note = location.note.map { "\n  note: \($0)" } ?? ""
        switch cause.code {
        case .noSuchFileOrDirectory:
            return """
                cannot reach clusterd: no control socket at \(which).
                  Is clusterd running? If it is, its config names another controlSocket: give --config FILE (the daemon's config) or --socket PATH.\(note)
                """
        case .connectionRefused:
            return """
                cannot reach clusterd: nothing answers on \(which); the socket is left over from a clusterd that is not running.
                  Is clusterd running (systemctl status clusterd)?\(note)
                """
        case .permissionDenied, .notPermitted:
            var owner = ""
            if let o = try? FileIO.ownership(atPath: location.path) {
                owner = " (the socket belongs to uid \(o.uid), group \(o.gid), mode 0\(String(o.mode, radix: 8)))"
            }
            return """
                permission denied on the control socket \(which)\(owner).
                  Run clusterctl as the daemon's user or root, or as a member of the group set as controlGroup in the daemon's config; you are uid \(Sys.uid), gid \(Sys.gid). The directory of the socket must be searchable too.\(note)
                """
        default:
            return "cannot reach clusterd at \(which): \(cause)\(note)"
        }
    }
}

extension JSON {
    /// A whole number from the daemon's answer, never trapping on a wild value (0 when not one).
    var int64Value: Int64 {
        switch self {
        case .integer(let i): return i
        case .number(let d): return clampedInt64(d)
        default: return 0
        }
    }
}

/// `Int64(d)` traps on NaN, infinities and values out of range: those come back as 0 or the bound.
func clampedInt64(_ d: Double) -> Int64 {
    guard d.isFinite else { return 0 }
    if d >= 9.2e18 { return Int64.max }
    if d <= -9.2e18 { return Int64.min }
    return Int64(d)
}

func duration(_ seconds: Int64) -> String {
    if seconds < 60 { return "\(seconds)s" }
    if seconds < 3600 { return "\(seconds / 60)m\(String(format2(seconds % 60)))s" }
    if seconds < 86400 { return "\(seconds / 3600)h\(format2(seconds / 60 % 60))m" }
    return "\(seconds / 86400)d\(format2(seconds / 3600 % 24))h"
}

func format2(_ v: Int64) -> String { v < 10 ? "0\(v)" : "\(v)" }

/// Left-aligned columns.
func table(_ header: [String], _ rows: [[String]]) -> String {
    var widths = header.map(\.count)
    for row in rows { for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) } }
    func line(_ cells: [String]) -> String {
        cells.enumerated().map { i, c in i == cells.count - 1 ? c : c + String(repeating: " ", count: widths[i] - c.count) }.joined(separator: "  ")
    }
    return ([line(header)] + rows.map(line)).joined(separator: "\n")
}
