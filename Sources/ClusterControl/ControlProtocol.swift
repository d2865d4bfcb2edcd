import ClusterJSON

/// The control socket's wire contract: one JSON object per line each way, versioned.
///
///     {"v":1,"cmd":"scale","workers":16}   →  {"ok":true,...}
///     {"v":1,"cmd":"scale","delta":-2}     →  {"ok":false,"error":"..."}
public enum ControlRequest: Equatable, Sendable {
    case status
    case workers
    /// `wait`: answer once the new workers of a scale-up said ready (or failed), not when spawned.
    case scale(ScaleTarget, wait: Bool = false)
    case reload(wait: Bool)
    case stop(graceful: Bool)
    case reopenLogs
    /// Switch to the binary now installed at the daemon's path: the master re-executes itself (same
    /// PID, listeners, control socket and stats kept) and replaces its workers as a reload does.
    case upgrade

    public static let version = 1
    /// Longest request line accepted (bytes, newline excluded).
    public static let maxLineBytes = 4096

    public enum ScaleTarget: Equatable, Sendable {
        case absolute(Int)
        case relative(Int)
    }

    public var json: JSON {
        var o: JSONObject = ["v": .integer(Int64(Self.version))]
        switch self {
        case .status: o["cmd"] = "status"
        case .workers: o["cmd"] = "workers"
        case .scale(let target, let wait):
            o["cmd"] = "scale"
            switch target {
            case .absolute(let n): o["workers"] = .integer(Int64(n))
            case .relative(let d): o["delta"] = .integer(Int64(d))
            }
            if wait { o["wait"] = true }
        case .reload(let wait): o["cmd"] = "reload"; o["wait"] = .bool(wait)
        case .stop(let graceful): o["cmd"] = "stop"; o["graceful"] = .bool(graceful)
        case .reopenLogs: o["cmd"] = "reopen-logs"
        case .upgrade: o["cmd"] = "upgrade"
        }
        return .object(o)
    }

    /// Decodes one request line; the error text goes back to the client as is.
    public static func decode(_ line: [UInt8]) -> Result<ControlRequest, ControlError> {
        let json: JSON
        do { json = try JSONParser.parse(line) } catch { return .failure(ControlError("malformed request: \(error)")) }
        guard case .object(let o) = json else { return .failure(ControlError("request must be a JSON object")) }
        guard let v = o["v"]?.intValue else { return .failure(ControlError("missing protocol version \"v\"")) }
        guard v == version else { return .failure(ControlError("unsupported protocol version \(v) (this daemon speaks \(version))")) }
        guard let cmd = o["cmd"]?.stringValue else { return .failure(ControlError("missing \"cmd\"")) }
        func only(_ keys: Set<String>) -> ControlError? {
            for key in o.keys where !keys.contains(key) && key != "v" && key != "cmd" {
                return ControlError("unknown field \"\(key)\" for \(cmd)")
            }
            return nil
        }
        switch cmd {
        case "status":
            if let e = only([]) { return .failure(e) }
            return .success(.status)
        case "workers":
            if let e = only([]) { return .failure(e) }
            return .success(.workers)
        case "scale":
            if let e = only(["workers", "delta", "wait"]) { return .failure(e) }
            if let w = o["wait"], w.boolValue == nil { return .failure(ControlError("\"wait\" must be true or false")) }
            let wait = o["wait"]?.boolValue ?? false
            switch (o["workers"], o["delta"]) {
            case (let w?, nil):
                guard let n = w.intValue else { return .failure(ControlError("\"workers\" must be a whole number")) }
                return .success(.scale(.absolute(n), wait: wait))
            case (nil, let d?):
                guard let n = d.intValue else { return .failure(ControlError("\"delta\" must be a whole number")) }
                return .success(.scale(.relative(n), wait: wait))
            default:
                return .failure(ControlError("scale needs exactly one of \"workers\" or \"delta\""))
            }
        case "reload":
            if let e = only(["wait"]) { return .failure(e) }
            if let w = o["wait"], w.boolValue == nil { return .failure(ControlError("\"wait\" must be true or false")) }
            return .success(.reload(wait: o["wait"]?.boolValue ?? false))
        case "stop":
            if let e = only(["graceful"]) { return .failure(e) }
            if let g = o["graceful"], g.boolValue == nil { return .failure(ControlError("\"graceful\" must be true or false")) }
            return .success(.stop(graceful: o["graceful"]?.boolValue ?? true))
        case "reopen-logs":
            if let e = only([]) { return .failure(e) }
            return .success(.reopenLogs)
        case "upgrade":
            if let e = only([]) { return .failure(e) }
            return .success(.upgrade)
        default:
            return .failure(ControlError("unknown command \"\(cmd)\" (status, workers, scale, reload, stop, reopen-logs, upgrade)"))
        }
    }
}

public struct ControlError: Error, Equatable, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

public enum ControlResponse {
    public static func ok(_ fields: JSONObject = [:]) -> JSON {
        var o: JSONObject = ["ok": true]
        for e in fields.entries { o[e.key] = e.value }
        return .object(o)
    }

    public static func error(_ message: String) -> JSON {
        .object(["ok": false, "error": .string(message)])
    }
}
