/// `clusterd [--config PATH] [--check-config]`: parsed by hand so the daemon carries no CLI
/// framework (and no Foundation) into every worker.
public struct DaemonOptions: Equatable, Sendable {
    public static let defaultConfigPath = "/etc/clusterd/clusterd.json"

    public var configPath = DaemonOptions.defaultConfigPath
    public var checkConfig = false
    public var showHelp = false
    public var showVersion = false

    public init() {}

    public static func parse(_ arguments: [String]) -> Result<DaemonOptions, UsageError> {
        var options = DaemonOptions()
        var i = 0
        while i < arguments.count {
            let arg = arguments[i]
            switch arg {
            case "--config", "-c":
                guard i + 1 < arguments.count else { return .failure(UsageError("\(arg) needs a path")) }
                options.configPath = arguments[i + 1]
                i += 1
            case "--check-config", "-t":
                options.checkConfig = true
            case "--help", "-h":
                options.showHelp = true
            case "--version":
                options.showVersion = true
            default:
                if arg.hasPrefix("--config=") {
                    options.configPath = String(arg.dropFirst("--config=".count))
                } else {
                    return .failure(UsageError("unknown argument '\(arg)'"))
                }
            }
            i += 1
        }
        return .success(options)
    }

    public static let usage = usage(for: "clusterd")

    /// The usage text, for `clusterd` or an application built on the library.
    public static func usage(for name: String) -> String { """
        usage: \(name) [--config PATH] [--check-config]

          --config PATH, -c PATH   config file (default \(defaultConfigPath))
          --check-config, -t       validate the config and exit (0 if valid)
          --version                print the version
          --help, -h               show this help

        Signals to the master: TERM graceful stop, INT/QUIT fast stop, HUP reload,
        TTIN/TTOU one worker more/less, USR1 reopen logs. See `clusterctl --help`.
        """
    }
}

public struct UsageError: Error, Equatable, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
}

