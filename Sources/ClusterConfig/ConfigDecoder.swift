// The fuzzer (Fuzz/config) compiles ClusterJSON's and ClusterConfig's sources as one module.
#if canImport(ClusterJSON)
import ClusterJSON
#endif

extension ClusterConfiguration {
    /// Decodes and validates a config file's bytes. `file` names the file in errors.
    public static func decode(_ bytes: [UInt8], file: String) throws(ConfigError) -> ClusterConfiguration {
        let json: JSON
        do {
            json = try JSONParser.parse(bytes, options: .config)
        } catch {
            throw ConfigError(file: file, keyPath: "", message: "not valid JSON: \(error)")
        }
        return try decode(json, file: file)
    }

    public static func decode(_ text: String, file: String) throws(ConfigError) -> ClusterConfiguration {
        try decode(Array(text.utf8), file: file)
    }

    public static func decode(_ json: JSON, file: String) throws(ConfigError) -> ClusterConfiguration {
        var config = ClusterConfiguration()
        config.source = file
        // Every default below is the one `ClusterConfiguration` declares (the single source; Docs/configuration.md is checked against it).
        let defaults = ClusterConfiguration()
        var top = try ObjectReader(file: file, path: "", value: json, keys: topLevelKeys)

        config.maxWorkers = try top.int("maxWorkers", default: defaults.maxWorkers, range: 1...4096)
        if let w = top.take("workers") {
            switch w {
            case .string("auto"): config.workers = .auto
            case .string(let s): throw top.fail("workers", "must be a whole number or \"auto\", got \"\(s)\"")
            case .integer, .number:
                if case .number(let d) = w, d.rounded() != d {
                    throw top.fail("workers", "must be a whole number or \"auto\", got \(ObjectReader.describe(d))")
                }
                let n = try ObjectReader.int(w, range: 1...config.maxWorkers, suffix: " (maxWorkers)") { top.fail("workers", $0) }
                config.workers = .fixed(n)
            default: throw top.fail("workers", "must be a whole number or \"auto\", got \(w.typeName)")
            }
        }

        guard let listen = try top.array("listen") else { throw top.fail("listen", "is required: the addresses to serve on, e.g. [\"0.0.0.0:8080\"]") }
        guard !listen.isEmpty else { throw top.fail("listen", "must name at least one address") }
        guard listen.count <= 16 else { throw top.fail("listen", "at most 16 addresses, got \(listen.count)") }
        for (i, item) in listen.enumerated() {
            var path = "listen[\(i)]"
            // A string, or {"address": "...", "proxyProtocol": true} for a listener behind a balancer,
            // with "mode" and "group" for a Unix socket's file.
            var proxyProtocol = false
            var socketFile: UnixSocketFile? = nil
            var tls: TLS? = nil
            let text: String
            if case .object = item {
                var entry = try ObjectReader(file: file, path: path, value: item, keys: listenKeys)
                guard let address = try entry.string("address") else { throw entry.fail("address", "is required, e.g. \"0.0.0.0:8080\" or \"unix:/run/clusterd/http.sock\"") }
                proxyProtocol = try entry.bool("proxyProtocol", default: false)
                socketFile = try unixSocketFile(&entry, address: address)
                if let value = entry.take("tls") {
                    tls = try decodeTLS(value, file: file, path: "\(path).tls")
                    if proxyProtocol {
                        throw ConfigError(file: file, keyPath: "\(path).tls", message: "TLS on a proxyProtocol listener is not supported: terminate TLS at the balancer, or drop proxyProtocol")
                    }
                }
                try entry.finish()
                text = address
                path += ".address"
            } else if let string = item.stringValue {
                text = string
            } else {
                throw ConfigError(file: file, keyPath: path, message: "must be a string like \"0.0.0.0:8080\" or an object like {\"address\": \"0.0.0.0:8080\", \"proxyProtocol\": true}, got \(item.typeName)")
            }
            switch ListenAddress.parse(text) {
            case .success(let address):
                for (j, earlier) in config.listen.enumerated() where earlier.overlaps(address) {
                    let why = earlier.ip == address.ip
                        ? "is the same address as listen[\(j)] (\(earlier))"
                        : "overlaps listen[\(j)] (\(earlier)): \(earlier.ip?.isUnspecified == true ? earlier : address) already takes every \(address.isIPv6 ? "IPv6" : "IPv4") address on port \(address.port ?? 0); list one or the other"
                    throw ConfigError(file: file, keyPath: path, message: "\"\(text)\" \(why)")
                }
                config.listen.append(address)
                if proxyProtocol { config.proxyProtocol.insert(address) }
                if let tls { config.tls[address] = tls }
                if address.isUnix { config.unixSocketFiles[address] = socketFile ?? UnixSocketFile() }
            case .failure(let e):
                throw ConfigError(file: file, keyPath: path, message: "\"\(text)\": \(e.reason)")
            }
        }

        if let trusted = try top.array("trustedProxies") {
            config.trustedProxies = try networks(trusted, file: file, path: "trustedProxies")
        }
        // A Unix socket's peers are whoever its file's mode and group let connect: no address to trust.
        if let i = config.listen.firstIndex(where: { !$0.isUnix && config.proxyProtocol.contains($0) }), config.trustedProxies.isEmpty {
            throw ConfigError(file: file, keyPath: "listen[\(i)].proxyProtocol",
                              message: "needs trustedProxies: the addresses of the balancers allowed to send PROXY headers (e.g. [\"10.0.0.0/8\"])")
        }

        if let socket = try top.string("controlSocket") {
            guard socket.hasPrefix("/") else { throw top.fail("controlSocket", "must be an absolute path, got \"\(socket)\"") }
            guard socket.utf8.count < 108 else { throw top.fail("controlSocket", "must be shorter than 108 bytes (a Unix socket path limit)") }
            config.controlSocket = socket
        }
        if let i = config.listen.firstIndex(where: { $0.unixPath == config.controlSocket }) {
            throw ConfigError(file: file, keyPath: "listen[\(i)]", message: "\"\(config.listen[i])\" is the control socket's path (controlSocket): pick another path")
        }
        config.user = try principal(&top, "user")
        config.group = try principal(&top, "group")
        if config.group != nil && config.user == nil { throw top.fail("group", "needs user: the workers switch to a user and its group together") }
        if top.object["controlGroup"] != nil {
            config.controlGroup = try top.int("controlGroup", default: 0, range: 0...Int(Int32.max))
        }
        config.drainTimeout = try top.seconds("drainTimeout", default: defaults.drainTimeout, range: 0...3600)
        config.shutdownDelay = try top.seconds("shutdownDelay", default: defaults.shutdownDelay, range: 0...3600)
        config.heartbeatTimeout = try top.seconds("heartbeatTimeout", default: defaults.heartbeatTimeout, range: 1...3600)
        config.releaseMemoryAfterIdle = try top.seconds("releaseMemoryAfterIdle", default: defaults.releaseMemoryAfterIdle, range: 0...86400)
        config.busyPoll = try top.int("busyPoll", default: defaults.busyPoll, range: 0...1000)

        if let http = top.take("http") {
            var r = try ObjectReader(
                file: file, path: "http", value: http,
                keys: httpKeys)
            var h = HTTPSettings()
            let d = defaults.http
            h.keepAliveTimeout = try r.seconds("keepAliveTimeout", default: d.keepAliveTimeout, range: 0...3600)
            h.headerTimeout = try r.seconds("headerTimeout", default: d.headerTimeout, range: 0.1...3600)
            h.bodyTimeout = try r.seconds("bodyTimeout", default: d.bodyTimeout, range: 0.1...3600)
            h.maxHeaderBytes = try r.int("maxHeaderBytes", default: d.maxHeaderBytes, range: 1024...1_048_576)
            h.maxHeaderCount = try r.int("maxHeaderCount", default: d.maxHeaderCount, range: 1...1000)
            h.maxBodyBytes = try r.int("maxBodyBytes", default: d.maxBodyBytes, range: 0...1_073_741_824)
            h.maxConnections = try r.int("maxConnections", default: d.maxConnections, range: 1...1_000_000)
            h.maxKeepAliveRequests = try r.int("maxKeepAliveRequests", default: d.maxKeepAliveRequests, range: 0...1_000_000_000)
            try r.finish()
            config.http = h
        }

        try decodeMetrics(&top, into: &config, file: file)

        if let routes = try top.array("routes") {
            for (i, item) in routes.enumerated() {
                let path = "routes[\(i)]"
                var r = try ObjectReader(file: file, path: path, value: item, keys: routeKeys)
                guard let routePath = try r.string("path") else { throw r.fail("path", "is required") }
                guard routePath.hasPrefix("/"), !routePath.contains("?"), !routePath.contains("#"),
                    routePath.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F })
                else { throw r.fail("path", "must be an absolute path without query, spaces or control characters, got \"\(routePath)\"") }
                if config.routes.contains(where: { $0.path == routePath }) { throw r.fail("path", "\"\(routePath)\" has two routes") }
                if routePath == ClusterConfiguration.healthPath || routePath == ClusterConfiguration.readinessPath {
                    throw r.fail("path", "\(routePath) is served by clusterd itself (the health and readiness checks for load balancers): pick another path")
                }
                if let metrics = config.metrics, routePath == metrics.path {
                    throw r.fail("path", "\(routePath) is the metrics endpoint (metrics.path): pick another path, or move or turn off metrics")
                }
                var route = Route(path: routePath)
                route.status = try r.int("status", default: route.status, range: 200...599)
                if let ct = try r.string("contentType") {
                    guard isFieldValue(ct), !ct.isEmpty else { throw r.fail("contentType", "must be a header value without control characters") }
                    route.contentType = ct
                }
                route.body = try r.string("body") ?? ""
                if let headers = r.take("headers") {
                    let hr = try ObjectReader(file: file, path: "\(path).headers", value: headers)
                    for entry in hr.object.entries {
                        guard isToken(entry.key) else { throw hr.fail(entry.key, "is not a valid header name") }
                        guard let v = entry.value.stringValue, isFieldValue(v) else { throw hr.fail(entry.key, "must be a string without control characters") }
                        let lower = entry.key.lowercased()
                        guard !ClusterConfiguration.serverHeaders.contains(lower) else {
                            throw hr.fail(entry.key, lower == "content-type" ? "is set by the server: use the route's contentType" : "is set by the server itself (a second one would contradict it)")
                        }
                        route.headers.append((entry.key, v))
                    }
                }
                try r.finish()
                config.routes.append(route)
            }
        }

        if let roots = try top.array("static") {
            for (i, item) in roots.enumerated() {
                var r = try ObjectReader(file: file, path: "static[\(i)]", value: item, keys: staticKeys)
                guard let prefix = try r.string("prefix") else { throw r.fail("prefix", "is required") }
                guard prefix.hasPrefix("/"), prefix.hasSuffix("/") else { throw r.fail("prefix", "must start and end with '/', got \"\(prefix)\"") }
                // A prefix is sent back in redirects: `//host/` there would leave the site.
                guard !prefix.contains("//"), !prefix.contains("\\") else { throw r.fail("prefix", "must not contain '//' or '\\', got \"\(prefix)\"") }
                guard let root = try r.string("root") else { throw r.fail("root", "is required") }
                guard root.hasPrefix("/") else { throw r.fail("root", "must be an absolute path, got \"\(root)\"") }
                var entry = StaticRoot(prefix: prefix, root: root)
                if let index = try r.string("index") {
                    guard !index.isEmpty, !index.contains("/"), index != ".", index != ".." else { throw r.fail("index", "must be a file name, got \"\(index)\"") }
                    entry.index = index
                }
                entry.allowSymlinksOutside = try r.bool("allowSymlinksOutside", default: entry.allowSymlinksOutside)
                entry.allowHidden = try r.bool("allowHidden", default: entry.allowHidden)
                entry.openFileCache = try r.int("openFileCache", default: entry.openFileCache, range: 0...100_000)
                if config.staticRoots.contains(where: { $0.prefix == prefix }) { throw r.fail("prefix", "\"\(prefix)\" is used twice") }
                try r.finish()
                config.staticRoots.append(entry)
            }
        }

        if let log = top.take("accessLog") {
            var r = try ObjectReader(file: file, path: "accessLog", value: log, keys: accessLogKeys)
            guard let path = try r.string("path") else { throw r.fail("path", "is required (or remove accessLog to turn it off)") }
            guard path.hasPrefix("/") else { throw r.fail("path", "must be an absolute path, got \"\(path)\"") }
            var access = AccessLog(path: path)
            if let format = try r.string("format") {
                guard let f = AccessLog.Format(rawValue: format) else { throw r.fail("format", "must be \"combined\" or \"json\", got \"\(format)\"") }
                access.format = f
            }
            try r.finish()
            config.accessLog = access
        }

        if let affinity = top.take("cpuAffinity") {
            switch affinity {
            case .string("off"): config.cpuAffinity = .off
            case .string("auto"): config.cpuAffinity = .auto
            case .array(let items):
                var cpus: [Int] = []
                for (i, item) in items.enumerated() {
                    let cpu = try ObjectReader.int(item, range: 0...4095, suffix: " (a CPU number)") {
                        ConfigError(file: file, keyPath: "cpuAffinity[\(i)]", message: $0)
                    }
                    cpus.append(cpu)
                }
                guard !cpus.isEmpty else { throw top.fail("cpuAffinity", "must list at least one CPU") }
                config.cpuAffinity = .list(cpus)
            default:
                throw top.fail("cpuAffinity", "must be \"off\", \"auto\" or a list of CPU numbers")
            }
        }
        if let steering = try top.string("reusePortSteering") {
            guard let s = Steering(rawValue: steering) else { throw top.fail("reusePortSteering", "must be \"random\" or \"cpu\", got \"\(steering)\"") }
            config.reusePortSteering = s
        }
        config.deferAccept = try top.bool("deferAccept", default: defaults.deferAccept)
        if let types = top.take("mimeTypes") {
            let r = try ObjectReader(file: file, path: "mimeTypes", value: types)
            for entry in r.object.entries {
                guard !entry.key.isEmpty, entry.key.utf8.allSatisfy({ isTokenByte($0) && $0 != UInt8(ascii: ".") }) else {
                    throw r.fail(entry.key, "must be a file extension without the dot")
                }
                guard let type = entry.value.stringValue, isFieldValue(type), type.contains("/") else {
                    throw r.fail(entry.key, "must be a media type like \"text/html\"")
                }
                config.mimeTypes[entry.key.lowercased()] = type
            }
        }
        if let app = top.take("app") {
            // The application's own settings: any object, read by its handler factory
            // (`HandlerContext.app`), not by clusterd.
            guard case .object = app else { throw top.fail("app", "must be an object (the application's own settings), got \(app.typeName)") }
            config.app = app
        }

        try top.finish()
        return config
    }

    /// Every key the top level may have.
    static let topLevelKeys = [
        "workers", "maxWorkers", "listen", "trustedProxies", "user", "group", "controlSocket", "controlGroup", "drainTimeout", "shutdownDelay", "heartbeatTimeout",
        "releaseMemoryAfterIdle", "busyPoll", "http", "routes", "static", "accessLog", "metrics", "metricsPath",
        "cpuAffinity", "reusePortSteering", "deferAccept", "mimeTypes", "app",
    ]

    static let listenKeys = ["address", "proxyProtocol", "mode", "group", "tls"]
    static let tlsKeys = ["certificate", "key", "certificates", "minVersion", "ciphers", "ciphersuites", "kernelTLS"]
    static let tlsPairKeys = ["certificate", "key"]
    static let httpKeys = ["keepAliveTimeout", "headerTimeout", "bodyTimeout", "maxHeaderBytes", "maxHeaderCount", "maxBodyBytes", "maxConnections", "maxKeepAliveRequests"]
    static let routeKeys = ["path", "status", "contentType", "body", "headers"]
    static let staticKeys = ["prefix", "root", "index", "allowSymlinksOutside", "allowHidden", "openFileCache"]
    static let accessLogKeys = ["path", "format"]
    static let metricsKeys = ["path", "allow"]

    /// Each object of the file and the keys it may have, under the heading of Docs/configuration.md
    /// that documents them (a test holds the two in step).
    static let keysByDocumentedSection: [(heading: String, keys: [String])] = [
        ("Top level", topLevelKeys), ("`listen[]`", listenKeys), ("`listen[].tls`", tlsKeys), ("`http`", httpKeys), ("`routes[]`", routeKeys), ("`static[]`", staticKeys),
        ("`accessLog`", accessLogKeys), ("`metrics`", metricsKeys),
    ]

    /// The top-level key a misspelt `key` was probably meant to be (for messages and tools).
    public static func suggestion(for key: String) -> String? {
        ObjectReader.nearest(key, in: topLevelKeys)
    }

    /// `metrics: {"path": "/metrics", "allow": ["127.0.0.0/8", "::1/128"]}` or `null` (off); the
    /// older `metricsPath` (a path or null) still sets the path.
    static func decodeMetrics(_ top: inout ObjectReader, into config: inout ClusterConfiguration, file: String) throws(ConfigError) {
        let hasObject = top.object["metrics"] != nil
        if hasObject && top.object["metricsPath"] != nil {
            throw top.fail("metricsPath", "is the older form of metrics.path: give metrics only")
        }
        if top.object["metricsPath"] != nil {
            switch top.take("metricsPath") {
            case nil: config.metrics = nil
            case .string(let path)?: config.metrics?.path = try metricsPath(path) { top.fail("metricsPath", $0) }
            case let other?: throw top.fail("metricsPath", "must be a path like \"/metrics\", or null to turn it off, got \(other.typeName)")
            }
            return
        }
        guard hasObject else { return }
        guard let value = top.take("metrics") else {
            config.metrics = nil
            return
        }
        var r = try ObjectReader(file: file, path: "metrics", value: value, keys: metricsKeys)
        var metrics = ClusterConfiguration.Metrics()
        if let path = try r.string("path") { metrics.path = try metricsPath(path) { r.fail("path", $0) } }
        if let allow = try r.array("allow") {
            guard !allow.isEmpty else { throw r.fail("allow", "must list at least one network (to turn metrics off, set metrics to null)") }
            metrics.allow = try networks(allow, file: file, path: "metrics.allow")
        }
        try r.finish()
        config.metrics = metrics
    }

    /// `listen[].tls`: `{"certificate": PATH, "key": PATH}`, more pairs for SNI in `certificates`,
    /// `minVersion`, `ciphers` (TLS 1.2), `ciphersuites` (TLS 1.3), `kernelTLS`. The files are read
    /// and checked later (`--check-config`, start, reload): here only their shape.
    static func decodeTLS(_ value: JSON, file: String, path: String) throws(ConfigError) -> TLS {
        guard case .object = value else {
            throw ConfigError(file: file, keyPath: path, message: "must be an object like {\"certificate\": \"/etc/clusterd/site.pem\", \"key\": \"/etc/clusterd/site.key\"}, got \(value.typeName)")
        }
        var r = try ObjectReader(file: file, path: path, value: value, keys: tlsKeys)
        func pair(_ r: inout ObjectReader) throws(ConfigError) -> TLS.Pair {
            guard let certificate = try r.string("certificate") else { throw r.fail("certificate", "is required: the path of a PEM certificate chain") }
            guard let key = try r.string("key") else { throw r.fail("key", "is required: the path of the certificate's PEM private key") }
            guard certificate.hasPrefix("/") else { throw r.fail("certificate", "must be an absolute path, got \"\(certificate)\"") }
            guard key.hasPrefix("/") else { throw r.fail("key", "must be an absolute path, got \"\(key)\"") }
            return TLS.Pair(certificate: certificate, key: key)
        }
        let first = try pair(&r)
        var tls = TLS(pairs: [first])
        if let more = try r.array("certificates") {
            guard more.count <= 63 else { throw r.fail("certificates", "at most 63 more certificates, got \(more.count)") }
            for (i, item) in more.enumerated() {
                var p = try ObjectReader(file: file, path: "\(path).certificates[\(i)]", value: item, keys: tlsPairKeys)
                tls.pairs.append(try pair(&p))
                try p.finish()
            }
        }
        if let version = try r.string("minVersion") {
            guard let v = TLS.Version(rawValue: version) else { throw r.fail("minVersion", "must be \"1.2\" or \"1.3\", got \"\(version)\"") }
            tls.minVersion = v
        }
        for key in ["ciphers", "ciphersuites"] {
            guard let list = try r.string(key) else { continue }
            guard !list.isEmpty, list.utf8.count <= 1024, list.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) else {
                throw r.fail(key, "must be a non-empty OpenSSL cipher list without spaces (e.g. \"ECDHE+AESGCM:ECDHE+CHACHA20\"), got \"\(list)\"")
            }
            if key == "ciphers" { tls.ciphers = list } else { tls.ciphersuites = list }
        }
        tls.kernelTLS = try r.bool("kernelTLS", default: true)
        try r.finish()
        return tls
    }

    /// A listen entry's `mode` and `group`: for a `unix:` address (nil when it gives neither), refused
    /// for any other.
    static func unixSocketFile(_ entry: inout ObjectReader, address: String) throws(ConfigError) -> UnixSocketFile? {
        guard entry.object["mode"] != nil || entry.object["group"] != nil else { return nil }
        guard address.hasPrefix(ListenAddress.unixPrefix) else {
            throw entry.fail(entry.object["mode"] != nil ? "mode" : "group", "applies to a Unix socket (\"unix:/PATH\") only, not to \"\(address)\"")
        }
        var file = UnixSocketFile()
        if let mode = entry.take("mode") {
            guard let text = mode.stringValue else {
                throw entry.fail("mode", "must be a string of octal digits like \"0660\" (a JSON number would be read as decimal), got \(mode.typeName)")
            }
            guard (1...4).contains(text.utf8.count), text.utf8.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "7")).contains($0) }),
                let bits = UInt16(text, radix: 8), bits <= 0o777
            else { throw entry.fail("mode", "must be permission bits in octal, \"0000\"...\"0777\" (e.g. \"0660\"), got \"\(text)\"") }
            file.mode = bits
        }
        file.group = try principal(&entry, "group")
        return file
    }

    /// `user` or `group`: a name (as in /etc/passwd, /etc/group) or a number.
    static func principal(_ top: inout ObjectReader, _ key: String) throws(ConfigError) -> ClusterConfiguration.Principal? {
        guard let value = top.take(key) else { return nil }
        if let name = value.stringValue {
            let bytes = Array(name.utf8)
            guard !bytes.isEmpty, bytes.count <= 32, bytes.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: ":") && $0 != UInt8(ascii: "/") }) else {
                throw top.fail(key, "must be a user or group name (1 to 32 printable characters, no ':' or '/') or a number, got \"\(name)\"")
            }
            return .name(name)
        }
        guard let id = value.intValue, id >= 0, id < Int(Int32.max) else {
            throw top.fail(key, "must be a name or a number 0...\(Int32.max - 1), got \(value.typeName)")
        }
        return .id(id)
    }

    /// A list of networks ("10.0.0.0/8", "::1/128", or one address), at most 64.
    static func networks(_ list: [JSON], file: String, path: String) throws(ConfigError) -> [IPNetwork] {
        guard list.count <= 64 else { throw ConfigError(file: file, keyPath: path, message: "at most 64 networks, got \(list.count)") }
        var result: [IPNetwork] = []
        for (i, item) in list.enumerated() {
            let itemPath = "\(path)[\(i)]"
            guard let text = item.stringValue else {
                throw ConfigError(file: file, keyPath: itemPath, message: "must be a network like \"10.0.0.0/8\" or \"::1/128\", got \(item.typeName)")
            }
            switch IPNetwork.parse(text) {
            case .success(let network): result.append(network)
            case .failure(let e): throw ConfigError(file: file, keyPath: itemPath, message: "\"\(text)\": \(e.reason)")
            }
        }
        return result
    }

    static func metricsPath(_ path: String, _ fail: (String) -> ConfigError) throws(ConfigError) -> String {
        guard path.hasPrefix("/"), !path.contains("?"), !path.contains("#"), path.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            throw fail("must be a path like \"/metrics\", got \"\(path)\"")
        }
        guard path != ClusterConfiguration.healthPath, path != ClusterConfiguration.readinessPath else {
            throw fail("\(path) is clusterd's own health or readiness check: pick another path")
        }
        return path
    }

    static func isToken(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.allSatisfy { b in
            switch b {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): return true
            default: return Array("!#$%&'*+-.^_`|~".utf8).contains(b)
            }
        }
    }

    static func isTokenByte(_ b: UInt8) -> Bool {
        switch b {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): return true
        default: return Array("!#$%&'*+-.^_`|~".utf8).contains(b)
        }
    }

    static func isFieldValue(_ s: String) -> Bool {
        s.utf8.allSatisfy { $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7F) }
    }
}
