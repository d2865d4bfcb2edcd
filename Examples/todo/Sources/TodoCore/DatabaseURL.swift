import PostgresNIO

/// `DATABASE_URL` as libpq and most hosting platforms write it, turned into a `PostgresClient`
/// configuration:
///
///     postgres://user[:password]@host[:port]/database
///     postgres://user@/database?host=/run/postgresql          (a Unix socket directory, port 5432)
///     postgresql://user@localhost:5433/todo?host=/tmp         (socket /tmp/.s.PGSQL.5433)
///
/// TLS is not used: the example talks to a database on the same machine or network.
public struct DatabaseURL: Sendable, Equatable {
    public var username: String
    public var password: String?
    /// A TCP host, or nil when `socketPath` is set.
    public var host: String?
    public var port: Int
    /// The Unix socket file (`<dir>/.s.PGSQL.<port>`) when the URL names a directory with `?host=`.
    public var socketPath: String?
    public var database: String?

    public struct Invalid: Error, CustomStringConvertible, Equatable {
        public var description: String
    }

    public init(_ text: String) throws(Invalid) {
        var rest = Substring(text)
        guard let scheme = rest.firstRange(of: "://"), ["postgres", "postgresql"].contains(rest[..<scheme.lowerBound]) else {
            throw Invalid(description: "must start with postgres:// or postgresql://")
        }
        rest = rest[scheme.upperBound...]
        var query: Substring = ""
        if let q = rest.firstIndex(of: "?") {
            query = rest[rest.index(after: q)...]
            rest = rest[..<q]
        }
        var authority = rest
        var path: Substring = ""
        if let slash = rest.firstIndex(of: "/") {
            authority = rest[..<slash]
            path = rest[rest.index(after: slash)...]
        }
        var userinfo: Substring? = nil
        var hostport = authority
        if let at = authority.lastIndex(of: "@") {
            userinfo = authority[..<at]
            hostport = authority[authority.index(after: at)...]
        }
        var user = "postgres"
        password = nil
        if let userinfo {
            let parts = userinfo.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            user = try Self.decode(parts[0])
            if parts.count == 2 { password = try Self.decode(parts[1]) }
        }
        var hostText: Substring = hostport
        port = 5432
        if let colon = hostport.lastIndex(of: ":"), !hostport.hasPrefix("[") || hostport[..<colon].hasSuffix("]") {
            hostText = hostport[..<colon]
            guard let p = Int(hostport[hostport.index(after: colon)...]), (1...65535).contains(p) else {
                throw Invalid(description: "bad port in \(hostport)")
            }
            port = p
        }
        if hostText.hasPrefix("[") && hostText.hasSuffix("]") { hostText = hostText.dropFirst().dropLast() }
        host = hostText.isEmpty ? nil : try Self.decode(hostText)
        database = path.isEmpty ? nil : try Self.decode(path)
        socketPath = nil
        var socketDirectory: String? = nil
        for pair in query.split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = kv[0], value = kv.count == 2 ? try Self.decode(kv[1]) : ""
            switch key {
            case "host":
                if value.hasPrefix("/") { host = nil; socketDirectory = value } else { host = value }
            case "port":
                guard let p = Int(value), (1...65535).contains(p) else { throw Invalid(description: "bad port \(value)") }
                port = p
            case "user": user = value
            case "password": password = value
            case "dbname": database = value
            case "sslmode":
                guard value == "disable" || value == "prefer" || value == "allow" else {
                    throw Invalid(description: "sslmode=\(value) is not supported (the example does not use TLS)")
                }
            default: break  // application_name and the like: harmless to ignore
            }
        }
        username = user
        if let socketDirectory { socketPath = "\(socketDirectory)/.s.PGSQL.\(port)" }
        if host == nil && socketPath == nil { host = "localhost" }
    }

    /// The client's configuration with at most `poolSize` connections.
    public func clientConfiguration(poolSize: Int) -> PostgresClient.Configuration {
        var config: PostgresClient.Configuration
        if let socketPath {
            config = .init(unixSocketPath: socketPath, username: username, password: password, database: database)
        } else {
            config = .init(host: host ?? "localhost", port: port, username: username, password: password, database: database, tls: .disable)
        }
        config.options.maximumConnections = poolSize
        config.options.minimumConnections = 0
        return config
    }

    /// Percent-decoding (`%2F` → `/`); a malformed escape is an error.
    static func decode(_ text: Substring) throws(Invalid) -> String {
        guard text.contains("%") else { return String(text) }
        var bytes: [UInt8] = []
        var i = text.utf8.startIndex
        let utf8 = text.utf8
        while i != utf8.endIndex {
            let b = utf8[i]
            if b == UInt8(ascii: "%") {
                let h = utf8.index(after: i)
                guard h != utf8.endIndex, utf8.index(after: h) != utf8.endIndex,
                    let hi = hexValue(utf8[h]), let lo = hexValue(utf8[utf8.index(after: h)])
                else { throw Invalid(description: "bad percent-escape in \(text)") }
                bytes.append(hi << 4 | lo)
                i = utf8.index(h, offsetBy: 2)
            } else {
                bytes.append(b)
                i = utf8.index(after: i)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func hexValue(_ b: UInt8) -> UInt8? {
        switch b {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return b - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return b - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return b - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
