import ArgumentParser
import ClusterControl
import ClusterJSON

#if canImport(Glibc)
import Glibc
#endif

@main
enum Main {
    static func main() {
        Clusterctl.main(Clusterctl.hoistingGlobalOptions(Array(CommandLine.arguments.dropFirst())))
    }
}

struct Clusterctl: ParsableCommand {
    /// `clusterctl --socket PATH status` is how operators write it: connection options given before
    /// the subcommand are moved after it, where the subcommand's option group reads them.
    static func hoistingGlobalOptions(_ arguments: [String]) -> [String] {
        var leading: [String] = []
        var rest = arguments[...]
        while let first = rest.first, first.hasPrefix("--socket") || first.hasPrefix("--timeout") {
            leading.append(first)
            rest = rest.dropFirst()
            if !first.contains("="), let value = rest.first {
                leading.append(value)
                rest = rest.dropFirst()
            }
        }
        guard let subcommand = rest.first, !leading.isEmpty else { return arguments }
        return [subcommand] + leading + Array(rest.dropFirst())
    }

    static let configuration = CommandConfiguration(
        commandName: "clusterctl",
        abstract: "Control a running clusterd through its control socket.",
        usage: "clusterctl [--socket <path>] [--timeout <seconds>] <subcommand>",
        discussion: """
            The socket is --socket, else $CLUSTERD_SOCKET, else /run/clusterd/control.sock.
            Exit codes: 0 done, 1 the daemon refused or the command failed, 3 the daemon cannot be
            reached, 4 the daemon's answer made no sense, 64 bad usage.
            """,
        version: "0.1.0",
        subcommands: [Status.self, Workers.self, Top.self, Scale.self, Reload.self, Stop.self, ReopenLogs.self])
}

/// Options every subcommand takes.
struct ConnectionOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Control socket of the daemon.", valueName: "path"))
    var socket: String = getenv("CLUSTERD_SOCKET").map { String(cString: $0) } ?? "/run/clusterd/control.sock"

    @Option(name: .long, help: "Seconds to wait for an answer.")
    var timeout: Int = 60

    func send(_ request: ControlRequest) throws -> JSONObject {
        let response: JSON
        do {
            response = try ControlClient(path: socket, timeout: timeout).send(request)
        } catch {
            switch error {
            case .connect: printError("clusterctl: \(error)")
                throw ExitCode(3)
            default:
                printError("clusterctl: \(error)")
                throw ExitCode(4)
            }
        }
        guard case .object(let o) = response, let ok = o["ok"]?.boolValue else {
            printError("clusterctl: bad response from daemon: \(response.serialized)")
            throw ExitCode(4)
        }
        guard ok else {
            printError("clusterctl: \(o["error"]?.stringValue ?? "failed")")
            throw ExitCode(1)
        }
        return o
    }
}

func printError(_ text: String) {
    var line = text + "\n"
    _ = line.withUTF8 { write(2, $0.baseAddress, $0.count) }
}

/// 12345 → "12,345".
func grouped(_ value: Int64) -> String {
    var digits = String(value.magnitude)
    var out = ""
    while digits.count > 3 {
        out = "," + digits.suffix(3) + out
        digits.removeLast(3)
    }
    return (value < 0 ? "-" : "") + digits + out
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
