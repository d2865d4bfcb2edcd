/// A numeric IPv4 (4 bytes) or IPv6 (16 bytes) address, parsed exactly as `inet_pton(3)` would
/// accept it, so that what the config check passes is what the master can bind: no leading zeros in
/// IPv4 parts, one `::` at most, eight 16-bit groups (a trailing dotted IPv4 counts as two), no
/// zone (`%eth0`).
public struct IPAddress: Hashable, Sendable, CustomStringConvertible {
    /// Network byte order; 4 bytes for IPv4, 16 for IPv6.
    public let bytes: [UInt8]

    public init?(bytes: [UInt8]) {
        guard bytes.count == 4 || bytes.count == 16 else { return nil }
        self.bytes = bytes
    }

    public var isIPv6: Bool { bytes.count == 16 }
    /// `0.0.0.0` or `::`: every address of its family.
    public var isUnspecified: Bool { bytes.allSatisfy { $0 == 0 } }
    /// `::ffff:a.b.c.d`, the IPv4 address as an IPv6 socket sees it.
    public var isIPv4Mapped: Bool { isIPv6 && bytes[0..<10].allSatisfy { $0 == 0 } && bytes[10] == 0xFF && bytes[11] == 0xFF }

    /// The IPv4 address for an IPv4-mapped IPv6 one; itself otherwise.
    public var unmapped: IPAddress {
        isIPv4Mapped ? IPAddress(validated: Array(bytes[12..<16])) : self
    }

    init(validated bytes: [UInt8]) { self.bytes = bytes }

    public var description: String {
        if !isIPv6 { return bytes.map { String($0) }.joined(separator: ".") }
        var groups: [UInt16] = []
        for i in stride(from: 0, to: 16, by: 2) { groups.append(UInt16(bytes[i]) << 8 | UInt16(bytes[i + 1])) }
        // The longest run of two or more zero groups becomes "::" (RFC 5952).
        var best = (start: -1, count: 0)
        var i = 0
        while i < 8 {
            if groups[i] == 0 {
                var j = i
                while j < 8 && groups[j] == 0 { j += 1 }
                if j - i > best.count && j - i >= 2 { best = (i, j - i) }
                i = j
            } else {
                i += 1
            }
        }
        func hex(_ g: ArraySlice<UInt16>) -> String { g.map { String($0, radix: 16) }.joined(separator: ":") }
        if best.start < 0 { return hex(groups[...]) }
        return hex(groups[0..<best.start]) + "::" + hex(groups[(best.start + best.count)...])
    }

    /// Parses dotted-quad IPv4 text.
    public static func parseIPv4<S: StringProtocol>(_ text: S) -> IPAddress? {
        parseIPv4(Array(text.utf8)[...]).map(IPAddress.init(validated:))
    }

    /// Parses IPv6 text (without brackets).
    public static func parseIPv6<S: StringProtocol>(_ text: S) -> IPAddress? {
        let b = Array(text.utf8)
        guard b.count >= 2, b.count <= 45 else { return nil }
        var doubleColon: Int? = nil
        var i = 0
        while i + 1 < b.count {
            if b[i] == UInt8(ascii: ":") && b[i + 1] == UInt8(ascii: ":") {
                if doubleColon != nil { return nil }
                doubleColon = i
                i += 2
            } else {
                i += 1
            }
        }
        var out: [UInt8] = []
        if let dc = doubleColon {
            guard let head = groups(b[..<dc], v4Allowed: false), let tail = groups(b[(dc + 2)...], v4Allowed: true),
                head.count + tail.count <= 14
            else { return nil }
            out = head + [UInt8](repeating: 0, count: 16 - head.count - tail.count) + tail
        } else {
            guard let all = groups(b[...], v4Allowed: true), all.count == 16 else { return nil }
            out = all
        }
        return IPAddress(validated: out)
    }

    /// Either family: IPv6 when the text has a ':'.
    public static func parse<S: StringProtocol>(_ text: S) -> IPAddress? {
        text.contains(":") ? parseIPv6(text) : parseIPv4(text)
    }

    /// Colon-separated 1–4 digit hex groups as bytes; the last may be a dotted IPv4 address.
    static func groups(_ part: ArraySlice<UInt8>, v4Allowed: Bool) -> [UInt8]? {
        if part.isEmpty { return [] }
        var out: [UInt8] = []
        let pieces = part.split(separator: UInt8(ascii: ":"), omittingEmptySubsequences: false)
        for (n, piece) in pieces.enumerated() {
            if n == pieces.count - 1, v4Allowed, piece.contains(UInt8(ascii: ".")) {
                guard let v4 = parseIPv4(piece) else { return nil }
                out += v4
                continue
            }
            guard (1...4).contains(piece.count) else { return nil }
            var value: UInt16 = 0
            for c in piece {
                guard let d = hexDigit(c) else { return nil }
                value = value << 4 | UInt16(d)
            }
            out += [UInt8(value >> 8), UInt8(value & 0xFF)]
        }
        return out.count <= 16 ? out : nil
    }

    static func parseIPv4(_ text: ArraySlice<UInt8>) -> [UInt8]? {
        let parts = text.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var out: [UInt8] = []
        for p in parts {
            // inet_pton refuses leading zeros ("010" could be read as octal).
            guard (1...3).contains(p.count), p.allSatisfy({ (0x30...0x39).contains($0) }), p.count == 1 || p.first != 0x30 else { return nil }
            let v = p.reduce(0) { $0 * 10 + Int($1 - 0x30) }
            guard v <= 255 else { return nil }
            out.append(UInt8(v))
        }
        return out
    }

    static func hexDigit(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: return c - 0x30
        case 0x61...0x66: return c - 0x61 + 10
        case 0x41...0x46: return c - 0x41 + 10
        default: return nil
        }
    }
}

/// An address block in CIDR notation (`127.0.0.0/8`, `::1/128`; a bare address is the one address).
public struct IPNetwork: Hashable, Sendable, CustomStringConvertible {
    public let address: IPAddress
    public let prefixLength: Int

    public init?(address: IPAddress, prefixLength: Int) {
        guard (0...address.bytes.count * 8).contains(prefixLength) else { return nil }
        self.address = address
        self.prefixLength = prefixLength
    }

    public var description: String { "\(address)/\(prefixLength)" }

    /// Parses `ADDRESS[/LENGTH]`; the reason on failure (for a config message).
    public static func parse(_ text: String) -> Result<IPNetwork, ListenAddressError> {
        let addressText: Substring
        var length: Int? = nil
        if let slash = text.firstIndex(of: "/") {
            addressText = text[..<slash]
            let digits = text[text.index(after: slash)...]
            guard (1...3).contains(digits.count), digits.allSatisfy({ $0.isASCII && $0.isNumber }), let n = Int(digits) else {
                return .failure(.init("the prefix length after '/' must be a number"))
            }
            length = n
        } else {
            addressText = text[...]
        }
        guard let address = IPAddress.parse(addressText) else {
            return .failure(.init("'\(addressText)' is not a numeric IPv4 or IPv6 address"))
        }
        let bits = address.bytes.count * 8
        let prefix = length ?? bits
        guard prefix <= bits, let network = IPNetwork(address: address, prefixLength: prefix) else {
            return .failure(.init("the prefix length must be 0...\(bits) for \(address.isIPv6 ? "IPv6" : "IPv4")"))
        }
        let masked = network.masked
        guard masked == address else {
            return .failure(.init("has bits set past the prefix length: did you mean \(masked)/\(prefix)?"))
        }
        return .success(network)
    }

    /// The address with the bits past the prefix cleared.
    var masked: IPAddress {
        var bytes = address.bytes
        for i in 0..<bytes.count {
            let keep = max(0, min(8, prefixLength - i * 8))
            bytes[i] &= keep == 0 ? 0 : UInt8(truncatingIfNeeded: 0xFF << (8 - keep))
        }
        return IPAddress(validated: bytes)
    }

    /// Whether `peer` is in this block (an IPv4-mapped IPv6 peer counts as its IPv4 address).
    public func contains(_ peer: IPAddress) -> Bool {
        let peer = peer.unmapped
        guard peer.bytes.count == address.bytes.count else { return false }
        var bits = prefixLength
        var i = 0
        while bits > 0 {
            let take = min(8, bits)
            let mask = UInt8(truncatingIfNeeded: 0xFF << (8 - take))
            if peer.bytes[i] & mask != address.bytes[i] & mask { return false }
            bits -= take
            i += 1
        }
        return true
    }
}
