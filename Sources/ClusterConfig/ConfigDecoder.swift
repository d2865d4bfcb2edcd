import ClusterJSON

extension ClusterConfiguration {
    /// Decodes and validates a config file's bytes. `file` names the file in errors.
    public static func decode(_ bytes: [UInt8], file: String) throws(ConfigError) -> ClusterConfiguration {
        let json: JSON
        do {
            json = try JSONParser.parse(bytes)
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
        var top = try ObjectReader(file: file, path: "", value: json)

        config.maxWorkers = try top.int("maxWorkers", default: 256, range: 1...4096)
        if let w = top.take("workers") {
            switch w {
            case .string("auto"): config.workers = .auto
            default:
                guard let n = w.intValue else { throw top.fail("workers", "must be a number or \"auto\", got \(w.typeName == "a string" ? "\"\(w.stringValue!)\"" : w.typeName)") }
                guard (1...config.maxWorkers).contains(n) else { throw top.fail("workers", "must be 1...\(config.maxWorkers) (maxWorkers), got \(n)") }
                config.workers = .fixed(n)
            }
        }

        guard let listen = try top.array("listen") else { throw top.fail("listen", "is required: the addresses to serve on, e.g. [\"0.0.0.0:8080\"]") }
        guard !listen.isEmpty else { throw top.fail("listen", "must name at least one address") }
        guard listen.count <= 16 else { throw top.fail("listen", "at most 16 addresses, got \(listen.count)") }
        for (i, item) in listen.enumerated() {
            let path = "listen[\(i)]"
            guard let text = item.stringValue else { throw ConfigError(file: file, keyPath: path, message: "must be a string like \"0.0.0.0:8080\", got \(item.typeName)") }
            switch ListenAddress.parse(text) {
            case .success(let address):
                if config.listen.contains(address) { throw ConfigError(file: file, keyPath: path, message: "\(text) is listed twice") }
                config.listen.append(address)
            case .failure(let e):
                throw ConfigError(file: file, keyPath: path, message: "\(e.reason), got \"\(text)\"")
            }
        }

        if let socket = try top.string("controlSocket") {
            guard socket.hasPrefix("/") else { throw top.fail("controlSocket", "must be an absolute path, got \"\(socket)\"") }
            guard socket.utf8.count < 108 else { throw top.fail("controlSocket", "must be shorter than 108 bytes (a Unix socket path limit)") }
            config.controlSocket = socket
        }
        if top.object["controlGroup"] != nil {
            config.controlGroup = try top.int("controlGroup", default: 0, range: 0...Int(Int32.max))
        }
        config.drainTimeout = try top.seconds("drainTimeout", default: 30, range: 0...3600)
        config.heartbeatTimeout = try top.seconds("heartbeatTimeout", default: 10, range: 1...3600)
        config.releaseMemoryAfterIdle = try top.seconds("releaseMemoryAfterIdle", default: 10, range: 0...86400)
        config.busyPoll = try top.int("busyPoll", default: 20, range: 0...1000)

        if let http = top.take("http") {
            var r = try ObjectReader(file: file, path: "http", value: http)
            var h = HTTPSettings()
            h.keepAliveTimeout = try r.seconds("keepAliveTimeout", default: 75, range: 0...3600)
            h.headerTimeout = try r.seconds("headerTimeout", default: 10, range: 0.1...3600)
            h.bodyTimeout = try r.seconds("bodyTimeout", default: 30, range: 0.1...3600)
            h.maxHeaderBytes = try r.int("maxHeaderBytes", default: 16384, range: 1024...1_048_576)
            h.maxHeaderCount = try r.int("maxHeaderCount", default: 100, range: 1...1000)
            h.maxBodyBytes = try r.int("maxBodyBytes", default: 1_048_576, range: 0...1_073_741_824)
            h.maxConnections = try r.int("maxConnections", default: 10_000, range: 1...1_000_000)
            h.maxKeepAliveRequests = try r.int("maxKeepAliveRequests", default: 0, range: 0...1_000_000_000)
            try r.finish()
            config.http = h
        }

        if let routes = try top.array("routes") {
            for (i, item) in routes.enumerated() {
                let path = "routes[\(i)]"
                var r = try ObjectReader(file: file, path: path, value: item)
                guard let routePath = try r.string("path") else { throw r.fail("path", "is required") }
                guard routePath.hasPrefix("/"), !routePath.contains("?"), !routePath.contains("#"),
                    routePath.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F })
                else { throw r.fail("path", "must be an absolute path without query, spaces or control characters, got \"\(routePath)\"") }
                if config.routes.contains(where: { $0.path == routePath }) { throw r.fail("path", "\"\(routePath)\" has two routes") }
                var route = Route(path: routePath)
                route.status = try r.int("status", default: 200, range: 200...599)
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
                        guard !["content-length", "transfer-encoding", "connection", "date", "content-type"].contains(lower) else {
                            throw hr.fail(entry.key, "is set by the server (use contentType for Content-Type)")
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
                var r = try ObjectReader(file: file, path: "static[\(i)]", value: item)
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
                entry.allowSymlinksOutside = try r.bool("allowSymlinksOutside", default: false)
                entry.allowHidden = try r.bool("allowHidden", default: false)
                if config.staticRoots.contains(where: { $0.prefix == prefix }) { throw r.fail("prefix", "\"\(prefix)\" is used twice") }
                try r.finish()
                config.staticRoots.append(entry)
            }
        }

        if let log = top.take("accessLog") {
            var r = try ObjectReader(file: file, path: "accessLog", value: log)
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

        if top.object["metricsPath"] != nil {
            let v = top.take("metricsPath")
            switch v {
            case nil: config.metricsPath = nil
            case .string(let path)? where path.hasPrefix("/") && !path.contains("?"): config.metricsPath = path
            default: throw top.fail("metricsPath", "must be a path like \"/metrics\", or null to turn it off")
            }
        }
        if let affinity = top.take("cpuAffinity") {
            switch affinity {
            case .string("off"): config.cpuAffinity = .off
            case .string("auto"): config.cpuAffinity = .auto
            case .array(let items):
                var cpus: [Int] = []
                for (i, item) in items.enumerated() {
                    guard let cpu = item.intValue, (0...4095).contains(cpu) else {
                        throw ConfigError(file: file, keyPath: "cpuAffinity[\(i)]", message: "must be a CPU number 0...4095")
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
        config.deferAccept = try top.bool("deferAccept", default: false)
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

        try top.finish()
        return config
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
