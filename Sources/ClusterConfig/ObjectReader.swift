import ClusterJSON

/// Reads one JSON object strictly: each key is taken once, and `finish()` rejects whatever key was
/// not taken. Errors carry the full key path.
struct ObjectReader {
    let file: String
    let path: String
    let object: JSONObject
    private var taken: Set<String> = []

    init(file: String, path: String, value: JSON) throws(ConfigError) {
        self.file = file
        self.path = path
        guard case .object(let o) = value else {
            throw ConfigError(file: file, keyPath: path, message: "must be an object, got \(value.typeName)")
        }
        object = o
    }

    func keyPath(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    func fail(_ key: String, _ message: String) -> ConfigError {
        ConfigError(file: file, keyPath: keyPath(key), message: message)
    }

    mutating func take(_ key: String) -> JSON? {
        taken.insert(key)
        guard let v = object[key], v != .null else { return nil }
        return v
    }

    mutating func int(_ key: String, default value: Int, range: ClosedRange<Int>) throws(ConfigError) -> Int {
        guard let v = take(key) else { return value }
        guard let i = v.intValue else {
            if case .number(let d) = v { throw fail(key, "must be a whole number, got \(d)") }
            throw fail(key, "must be a number, got \(v.typeName)")
        }
        guard range.contains(i) else { throw fail(key, "must be \(range.lowerBound)...\(range.upperBound), got \(i)") }
        return i
    }

    /// Seconds, fractional allowed.
    mutating func seconds(_ key: String, default value: Double, range: ClosedRange<Double>) throws(ConfigError) -> Double {
        guard let v = take(key) else { return value }
        guard let d = v.doubleValue else { throw fail(key, "must be a number of seconds, got \(v.typeName)") }
        guard range.contains(d) else { throw fail(key, "must be \(Self.format(range.lowerBound))...\(Self.format(range.upperBound)) seconds, got \(Self.format(d))") }
        return d
    }

    static func format(_ d: Double) -> String {
        d.rounded() == d ? String(Int(d)) : "\(d)"
    }

    mutating func string(_ key: String) throws(ConfigError) -> String? {
        guard let v = take(key) else { return nil }
        guard let s = v.stringValue else { throw fail(key, "must be a string, got \(v.typeName)") }
        return s
    }

    mutating func bool(_ key: String, default value: Bool) throws(ConfigError) -> Bool {
        guard let v = take(key) else { return value }
        guard let b = v.boolValue else { throw fail(key, "must be true or false, got \(v.typeName)") }
        return b
    }

    mutating func array(_ key: String) throws(ConfigError) -> [JSON]? {
        guard let v = take(key) else { return nil }
        guard let a = v.arrayValue else { throw fail(key, "must be an array, got \(v.typeName)") }
        return a
    }

    func finish() throws(ConfigError) {
        for key in object.keys where !taken.contains(key) {
            throw ConfigError(file: file, keyPath: keyPath(key), message: "unknown key")
        }
    }
}
