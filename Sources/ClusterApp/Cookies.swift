import ClusterHTTP
import FoundationEssentials

/// The cookies a request sent (`Cookie: a=1; b=2`, RFC 6265 §5.4), read when asked for. Values are
/// as sent, without surrounding double quotes; cookies are not percent-decoded (RFC 6265 has no
/// such encoding: an app that percent-encodes its values decodes them itself).
public struct Cookies: Sendable, Sequence {
    let headers: Headers

    /// The value of the first cookie called `name`, or nil.
    public subscript(_ name: String) -> String? {
        for (key, value) in self where key == name { return value }
        return nil
    }

    public func makeIterator() -> IndexingIterator<[(name: String, value: String)]> {
        var pairs: [(name: String, value: String)] = []
        for header in headers.values("cookie") {
            for piece in header.split(separator: ";") {
                guard let equals = piece.firstIndex(of: "=") else { continue }
                let name = piece[..<equals].trimmingSpaces
                var value = piece[piece.index(after: equals)...].trimmingSpaces
                if value.count >= 2 && value.first == "\"" && value.last == "\"" { value = value.dropFirst().dropLast() }
                if !name.isEmpty { pairs.append((String(name), String(value))) }
            }
        }
        return pairs.makeIterator()
    }
}

extension Substring {
    var trimmingSpaces: Substring {
        var s = self
        while s.first == " " || s.first == "\t" { s = s.dropFirst() }
        while s.last == " " || s.last == "\t" { s = s.dropLast() }
        return s
    }
}

/// A cookie to set (`Set-Cookie`, RFC 6265 §4.1): `Response.setCookie` checks every part, so no
/// name, value or attribute can break out of its header (no CR, LF, `;` where it would end the
/// value).
public struct Cookie: Sendable, Equatable {
    public enum SameSite: String, Sendable {
        case strict = "Strict", lax = "Lax", none = "None"
    }

    public var name: String
    public var value: String
    public var path: String?
    public var domain: String?
    /// Seconds until it expires (0 or less: at once).
    public var maxAge: Int?
    public var expires: Date?
    public var secure: Bool
    public var httpOnly: Bool
    /// `.none` requires `secure` (browsers drop it otherwise).
    public var sameSite: SameSite?

    public init(name: String, value: String, path: String? = nil, domain: String? = nil, maxAge: Int? = nil, expires: Date? = nil,
                secure: Bool = false, httpOnly: Bool = false, sameSite: SameSite? = nil) {
        self.name = name
        self.value = value
        self.path = path
        self.domain = domain
        self.maxAge = maxAge
        self.expires = expires
        self.secure = secure
        self.httpOnly = httpOnly
        self.sameSite = sameSite
    }

    /// A cookie that tells the browser to delete `name` (empty value, `Max-Age=0`); give the
    /// `path` and `domain` it was set with.
    public static func expired(_ name: String, path: String? = nil, domain: String? = nil) -> Cookie {
        Cookie(name: name, value: "", path: path, domain: domain, maxAge: 0)
    }

    /// The `Set-Cookie` field value, or `HTTPError` 500 naming the part that is not allowed.
    public func headerValue() throws -> String {
        guard !name.isEmpty, name.utf8.allSatisfy(Self.isTokenByte) else { throw Self.invalid("name \(name.debugDescription)") }
        guard Self.isValidValue(value) else { throw Self.invalid("value of \(name)") }
        var out = "\(name)=\(value)"
        if let path {
            guard path.utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7F && $0 != UInt8(ascii: ";") }) else { throw Self.invalid("path of \(name)") }
            out += "; Path=\(path)"
        }
        if let domain {
            let ok = !domain.isEmpty && domain.utf8.allSatisfy {
                ($0 >= 0x30 && $0 <= 0x39) || ($0 | 0x20 >= 0x61 && $0 | 0x20 <= 0x7A) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: ".")
            }
            guard ok else { throw Self.invalid("domain of \(name)") }
            out += "; Domain=\(domain)"
        }
        if let maxAge { out += "; Max-Age=\(maxAge)" }
        if let expires {
            let seconds = expires.timeIntervalSince1970.rounded(.down)
            guard seconds.isFinite, abs(seconds) < 253_402_300_800 else { throw Self.invalid("expiry of \(name)") }
            out += "; Expires=" + String(decoding: HTTPDate.format(epochSeconds: Int64(seconds)), as: UTF8.self)
        }
        if secure { out += "; Secure" }
        if httpOnly { out += "; HttpOnly" }
        if let sameSite {
            guard sameSite != .none || secure else { throw Self.invalid("SameSite=None without Secure on \(name)") }
            out += "; SameSite=\(sameSite.rawValue)"
        }
        return out
    }

    static func invalid(_ what: String) -> HTTPError { HTTPError(500, "invalid cookie \(what)") }

    /// RFC 9110 §5.6.2 tchar.
    static func isTokenByte(_ c: UInt8) -> Bool {
        switch c {
        case 0x30...0x39, 0x41...0x5A, 0x61...0x7A: return true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"), UInt8(ascii: "'"),
            UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "^"), UInt8(ascii: "_"),
            UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
            return true
        default: return false
        }
    }

    /// RFC 6265 cookie-value: cookie-octets, optionally in double quotes.
    static func isValidValue(_ value: String) -> Bool {
        var bytes = Substring(value).utf8[...]
        if bytes.count >= 2 && bytes.first == UInt8(ascii: "\"") && bytes.last == UInt8(ascii: "\"") { bytes = bytes.dropFirst().dropLast() }
        return bytes.allSatisfy { c in
            c == 0x21 || (0x23...0x2B).contains(c) || (0x2D...0x3A).contains(c) || (0x3C...0x5B).contains(c) || (0x5D...0x7E).contains(c)
        }
    }
}
