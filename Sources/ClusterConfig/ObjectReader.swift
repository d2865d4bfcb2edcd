// The fuzzer (Fuzz/config) compiles ClusterJSON's and ClusterConfig's sources as one module.
#if canImport(ClusterJSON)
import ClusterJSON
#endif

/// Reads one JSON object strictly. The keys an object may have are given up front, so a misspelt key
/// is reported as what it is (with the nearest known key) before any "is required" about the key it
/// was meant to be; each key is taken once, and `finish()` rejects whatever was not taken. Errors
/// carry the full key path.
struct ObjectReader {
    let file: String
    let path: String
    let object: JSONObject
    /// The keys this object may have; nil: any (a map such as `headers` or `mimeTypes`).
    let known: [String]?
    private var taken: Set<String> = []

    init(file: String, path: String, value: JSON, keys: [String]? = nil) throws(ConfigError) {
        self.file = file
        self.path = path
        self.known = keys
        guard case .object(let o) = value else {
            throw ConfigError(file: file, keyPath: path, message: path.isEmpty ? "the top level must be an object { ... }, got \(value.typeName)" : "must be an object, got \(value.typeName)")
        }
        object = o
        if let keys {
            for key in o.keys where !keys.contains(key) {
                throw ConfigError(file: file, keyPath: keyPath(key), message: Self.unknownKey(key, known: keys))
            }
        }
    }

    /// "unknown key", with the nearest known key when one is close (a typo, another case).
    static func unknownKey(_ key: String, known: [String]) -> String {
        guard let suggestion = nearest(key, in: known) else { return "unknown key" }
        return "unknown key (did you mean \(suggestion)?)"
    }

    /// The known key closest to `key` by edit distance, if it is close enough to be a typo:
    /// at most 1 edit for short keys, 2 from 5 characters, 3 from 9 (case differences count 0).
    static func nearest(_ key: String, in known: [String]) -> String? {
        let k = Array(key.lowercased().utf8)
        guard !k.isEmpty, k.count <= 64 else { return nil }
        var best: (key: String, distance: Int)? = nil
        for candidate in known {
            let d = editDistance(k, Array(candidate.lowercased().utf8))
            if d < (best?.distance ?? Int.max) { best = (candidate, d) }
        }
        guard let best else { return nil }
        let allowed = k.count >= 9 ? 3 : k.count >= 5 ? 2 : 1
        return best.distance <= allowed ? best.key : nil
    }

    /// Levenshtein distance (insert, delete, substitute; an adjacent swap counts 2).
    static func editDistance(_ a: [UInt8], _ b: [UInt8]) -> Int {
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var previous = Array(0...b.count)
        var row = [Int](repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            row[0] = i
            for j in 1...b.count {
                row[j] = min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            swap(&previous, &row)
        }
        return previous[b.count]
    }

    /// `path.key`; a key that is empty or not a plain name is shown quoted, `path["a.b"]`, so the
    /// path always names it unambiguously.
    func keyPath(_ key: String) -> String {
        let plain = !key.isEmpty && key.utf8.allSatisfy { b in
            (0x30...0x39).contains(b) || (0x41...0x5A).contains(b) || (0x61...0x7A).contains(b) || b == 0x5F || b == 0x2D
        }
        if plain { return path.isEmpty ? key : "\(path).\(key)" }
        return "\(path)[\(Self.quoted(key))]"
    }

    /// A key as a JSON string literal, controls escaped, at most 64 characters shown.
    static func quoted(_ key: String) -> String {
        var out = "\""
        for (i, scalar) in key.unicodeScalars.enumerated() {
            if i == 64 { out += "..."; break }
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case _ where scalar.value < 0x20 || scalar.value == 0x7F:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }

    func fail(_ key: String, _ message: String) -> ConfigError {
        ConfigError(file: file, keyPath: keyPath(key), message: message)
    }

    mutating func take(_ key: String) -> JSON? {
        // A key read here but missing from `keys` is our bug: init already refused it as unknown.
        // Loud in debug builds (every test that decodes that object stops here); a release build
        // carries on without it rather than trap on every config.
        assert(known?.contains(key) ?? true, "ObjectReader: \(key) is read but not listed in the object's keys")
        taken.insert(key)
        guard let v = object[key], v != .null else { return nil }
        return v
    }

    mutating func int(_ key: String, default value: Int, range: ClosedRange<Int>) throws(ConfigError) -> Int {
        guard let v = take(key) else { return value }
        return try Self.int(v, range: range, suffix: "") { fail(key, $0) }
    }

    /// A whole number in `range`, or `failure` with why not: not a number, a fraction, a number out
    /// of range (including ones too large for any integer, which JSON reads as a float).
    static func int(_ v: JSON, range: ClosedRange<Int>, suffix: String, failure: (String) -> ConfigError) throws(ConfigError) -> Int {
        let bounds = "\(range.lowerBound)...\(range.upperBound)\(suffix)"
        switch v {
        case .integer(let i):
            guard let n = Int(exactly: i), range.contains(n) else { throw failure("must be \(bounds), got \(i)") }
            return n
        case .number(let d):
            if d.rounded() != d { throw failure("must be a whole number, got \(describe(d))") }
            guard let n = v.intValue else { throw failure("must be \(bounds), got a number out of range") }
            guard range.contains(n) else { throw failure("must be \(bounds), got \(n)") }
            return n
        default:
            throw failure("must be a number, got \(v.typeName)")
        }
    }

    /// Seconds, fractional allowed.
    mutating func seconds(_ key: String, default value: Double, range: ClosedRange<Double>) throws(ConfigError) -> Double {
        guard let v = take(key) else { return value }
        guard let d = v.doubleValue else { throw fail(key, "must be a number of seconds, got \(v.typeName)") }
        guard range.contains(d) else { throw fail(key, "must be \(Self.describe(range.lowerBound))...\(Self.describe(range.upperBound)) seconds, got \(Self.describe(d))") }
        return d
    }

    /// A number as a person wrote it: whole numbers without ".0" (when they fit), else Swift's
    /// shortest form; never traps, whatever the size.
    static func describe(_ d: Double) -> String {
        if d.rounded() == d, abs(d) < 1e15 { return String(Int64(d)) }
        if d.rounded() == d { return "a number out of range" }
        return "\(d)"
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
            throw ConfigError(file: file, keyPath: keyPath(key), message: Self.unknownKey(key, known: known ?? []))
        }
    }
}
