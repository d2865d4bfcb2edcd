// The fuzzer (Fuzz/config) compiles ClusterJSON's and ClusterConfig's sources as one module.
#if canImport(ClusterJSON)
import ClusterJSON
#endif

/// Where `clusterctl` finds the daemon's control socket, and how it came to that path (for messages
/// an operator can act on). In order: `--socket PATH`; `--config FILE` (its `controlSocket`);
/// `$CLUSTERD_SOCKET`; the default config `/etc/clusterd/clusterd.json` when it exists (what the
/// packaged daemon reads); the built-in default socket `/run/clusterd/control.sock`.
public struct ControlSocketLocation: Equatable, Sendable {
    public var path: String
    /// "--socket", "controlSocket in FILE", "$CLUSTERD_SOCKET", "the built-in default", ...
    public var source: String
    /// Why a config that should have named the socket did not (the default config unreadable or
    /// invalid): said when the socket then cannot be reached.
    public var note: String? = nil

    public static let defaultConfig = "/etc/clusterd/clusterd.json"
    public static let defaultSocket = ClusterConfiguration().controlSocket

    public init(path: String, source: String, note: String? = nil) {
        self.path = path
        self.source = source
        self.note = note
    }

    /// What reading a config file gave: its bytes, nothing there, or why it could not be read.
    public enum FileRead {
        case bytes([UInt8])
        case missing
        case failed(String)
    }

    /// - Parameter readFile: reads a config file (injected for tests).
    public static func resolve(socket: String?, config: String?, environment: String?, readFile: (String) -> FileRead) -> Result<ControlSocketLocation, ConfigError> {
        if let socket { return .success(ControlSocketLocation(path: socket, source: "--socket")) }
        if let config {
            switch readFile(config) {
            case .bytes(let bytes):
                return controlSocket(inConfig: bytes, file: config).map { ControlSocketLocation(path: $0, source: "controlSocket in \(config)") }
            case .missing:
                return .failure(ConfigError(file: config, keyPath: "", message: "cannot read: no such file"))
            case .failed(let reason):
                return .failure(ConfigError(file: config, keyPath: "", message: "cannot read: \(reason)"))
            }
        }
        if let environment, !environment.isEmpty { return .success(ControlSocketLocation(path: environment, source: "$CLUSTERD_SOCKET")) }
        switch readFile(defaultConfig) {
        case .bytes(let bytes):
            switch controlSocket(inConfig: bytes, file: defaultConfig) {
            case .success(let path): return .success(ControlSocketLocation(path: path, source: "controlSocket in \(defaultConfig)"))
            case .failure(let error):
                return .success(ControlSocketLocation(path: defaultSocket, source: "the built-in default", note: "\(error)"))
            }
        case .missing:
            return .success(ControlSocketLocation(path: defaultSocket, source: "the built-in default (no \(defaultConfig))"))
        case .failed(let reason):
            return .success(ControlSocketLocation(path: defaultSocket, source: "the built-in default", note: "\(defaultConfig): cannot read: \(reason)"))
        }
    }

    /// The `controlSocket` a config file gives the daemon. A config that does not validate as a
    /// whole (being edited, say) still names its socket when that one key is sound: a `reload` of
    /// it must reach the daemon to be told what is wrong.
    public static func controlSocket(inConfig bytes: [UInt8], file: String) -> Result<String, ConfigError> {
        let whole: ConfigError
        do { return .success(try ClusterConfiguration.decode(bytes, file: file).controlSocket) } catch { whole = error }
        guard case .object(let top)? = try? JSONParser.parse(bytes, options: .config) else { return .failure(whole) }
        guard let value = top["controlSocket"] else { return .success(defaultSocket) }
        guard let path = value.stringValue, path.hasPrefix("/") else {
            return .failure(ConfigError(file: file, keyPath: "controlSocket", message: "must be an absolute path"))
        }
        return .success(path)
    }
}
