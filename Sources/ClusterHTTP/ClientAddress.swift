/// Who the client is when a balancer stands between it and us: the networks whose word we take
/// (`trustedProxies`), the `X-Forwarded-For` / `Forwarded` reading, and the PROXY v2 header a
/// worker writes to carry a connection's client address along when it hands the connection on.

/// The `trustedProxies` networks, matched without allocating (the worker asks once per accepted
/// connection, and per request that carries `X-Forwarded-For`).
public struct TrustedNetworks: Sendable {
    struct Block: Sendable {
        var isIPv6: Bool
        var high: UInt64, low: UInt64
        var maskHigh: UInt64, maskLow: UInt64
    }
    var blocks: [Block] = []

    /// `networks`: (address bytes, 4 or 16, network order; prefix length). Malformed ones are skipped
    /// (the config has checked them).
    public init(_ networks: [(bytes: [UInt8], prefixLength: Int)]) {
        for (bytes, prefix) in networks {
            guard let address = ProxyAddress(bytes: bytes), prefix >= 0, prefix <= bytes.count * 8 else { continue }
            let bits = address.isIPv6 ? prefix : prefix + 96
            let maskHigh: UInt64 = bits >= 64 ? ~0 : (bits == 0 ? 0 : ~0 << (64 - UInt64(bits)))
            let maskLow: UInt64 = bits <= 64 ? 0 : (bits >= 128 ? ~0 : ~0 << (128 - UInt64(bits)))
            blocks.append(Block(isIPv6: address.isIPv6, high: address.high & maskHigh, low: address.low & maskLow,
                                maskHigh: maskHigh, maskLow: maskLow))
        }
    }

    public var isEmpty: Bool { blocks.isEmpty }

    /// Whether `address` is in one of the networks; an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`,
    /// what a dual-stack socket reports) counts as its IPv4 address.
    public func contains(_ address: ProxyAddress) -> Bool {
        let a = address.unmapped
        for b in blocks where b.isIPv6 == a.isIPv6 {
            if a.high & b.maskHigh == b.high && a.low & b.maskLow == b.low { return true }
        }
        return false
    }
}

extension ProxyAddress {
    /// From 4 or 16 bytes in network order.
    public init?(bytes: [UInt8]) {
        switch bytes.count {
        case 4: self.init(ipv4: bytes.reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
        case 16:
            self.init(ipv6High: bytes[0..<8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) },
                      low: bytes[8..<16].reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
        default: return nil
        }
    }

    /// An IPv4-mapped IPv6 address as its IPv4 address; any other as it is.
    public var unmapped: ProxyAddress {
        isIPv6 && high == 0 && low >> 32 == 0xFFFF ? ProxyAddress(ipv4: UInt32(truncatingIfNeeded: low)) : self
    }

    /// Parses an IPv4 (`192.0.2.1`) or IPv6 (`2001:db8::1`) address as text, strictly.
    public static func parse(_ text: String) -> ProxyAddress? {
        var text = text
        return text.withUTF8 { parse(UnsafeRawBufferPointer($0)) }
    }

    static func parse(_ b: UnsafeRawBufferPointer) -> ProxyAddress? {
        if b.contains(UInt8(ascii: ":")) { return ProxyProtocol.parseIPv6(b, 0..<b.count) }
        return ProxyProtocol.parseIPv4(b, 0..<b.count).map { ProxyAddress(ipv4: $0) }
    }
}

extension ProxyProtocol {
    /// A v2 header (no TLVs) for `source` (PROXY over TCP; the destination is written as the
    /// unspecified address of the same family, port 0), or a LOCAL header when `source` is nil.
    /// What a worker sends with a connection it hands on; `parse` reads it back.
    public static func encodeV2(source: ProxyEndpoint?) -> [UInt8] {
        var out = v2Signature
        guard let source else {
            out += [0x20, 0x00, 0x00, 0x00]  // version 2, LOCAL; AF_UNSPEC; no address block
            return out
        }
        func be(_ v: UInt64, _ bytes: Int) -> [UInt8] { (0..<bytes).map { UInt8(truncatingIfNeeded: v >> UInt64(8 * (bytes - 1 - $0))) } }
        let port = be(UInt64(source.port), 2) + [0, 0]
        if source.address.isIPv6 {
            out += [0x21, 0x21, 0x00, 36]  // PROXY; TCP over IPv6; 16 + 16 + 2 + 2 bytes
            out += be(source.address.high, 8) + be(source.address.low, 8) + [UInt8](repeating: 0, count: 16) + port
        } else {
            out += [0x21, 0x11, 0x00, 12]  // PROXY; TCP over IPv4; 4 + 4 + 2 + 2 bytes
            out += be(source.address.low, 4) + [0, 0, 0, 0] + port
        }
        return out
    }
}

/// `X-Forwarded-For` and `Forwarded` (RFC 7239), read only when the request's nearest hop is a
/// trusted proxy.
public enum ForwardedHeaders {
    /// The client according to the request's `X-Forwarded-For` (or, when it has none, `Forwarded`
    /// `for=`) headers: walking the hops from the right (the one nearest us), the first address
    /// that is not itself a trusted proxy (nginx's `real_ip_recursive on`); the leftmost when all
    /// are trusted. Nil when there is no such header, or the hop to take is not an IP address (a
    /// `Forwarded: for=unknown`, an obfuscated name, garbage): then the caller keeps the address it had.
    public static func client(of request: HTTPRequest, trusted: TrustedNetworks) -> ProxyAddress? {
        var hops: [UnsafeRawBufferPointer] = []
        var sawForwardedFor = false
        for i in 0..<request.headerCount {
            let field = request.fields[i]
            let value = request.bytes(field.value)
            if HTTPParser.equalsLower(request.base, field.name, "x-forwarded-for") {
                if !sawForwardedFor { hops = [] }
                sawForwardedFor = true
                split(value.buffer, by: UInt8(ascii: ",")) { hops.append(trimmed($0)) }
            } else if !sawForwardedFor && HTTPParser.equalsLower(request.base, field.name, "forwarded") {
                split(value.buffer, by: UInt8(ascii: ",")) { element in
                    var forValue: UnsafeRawBufferPointer? = nil
                    split(element, by: UInt8(ascii: ";")) { pair in
                        let pair = trimmed(pair)
                        // `for=`, the parameter name in any case (RFC 7239 §4).
                        if pair.count > 4 && pair[0] | 0x20 == UInt8(ascii: "f") && pair[1] | 0x20 == UInt8(ascii: "o")
                            && pair[2] | 0x20 == UInt8(ascii: "r") && pair[3] == UInt8(ascii: "=") {
                            forValue = UnsafeRawBufferPointer(rebasing: pair[4...])
                        }
                    }
                    if let forValue { hops.append(forwardedNode(forValue)) }
                }
            }
        }
        guard !hops.isEmpty else { return nil }
        var chosen: ProxyAddress? = nil
        for hop in hops.reversed() {
            guard let address = ProxyAddress.parse(hop) else { return chosen }
            chosen = address
            if !trusted.contains(address) { break }
        }
        return chosen
    }

    /// A `Forwarded` node: `192.0.2.1`, `"[2001:db8::1]:4711"`, `"192.0.2.1:80"` → the address part.
    static func forwardedNode(_ v: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer {
        var start = 0, end = v.count
        if end - start >= 2 && v[start] == UInt8(ascii: "\"") && v[end - 1] == UInt8(ascii: "\"") { start += 1; end -= 1 }
        if start < end && v[start] == UInt8(ascii: "[") {
            // [v6] or [v6]:port
            var close = start + 1
            while close < end && v[close] != UInt8(ascii: "]") { close += 1 }
            return UnsafeRawBufferPointer(rebasing: v[(start + 1)..<min(close, end)])
        }
        // v4 or v4:port (a bare IPv6 address is not valid here without brackets)
        var colon = start
        while colon < end && v[colon] != UInt8(ascii: ":") { colon += 1 }
        return UnsafeRawBufferPointer(rebasing: v[start..<colon])
    }

    static func split(_ b: UnsafeRawBufferPointer, by separator: UInt8, _ body: (UnsafeRawBufferPointer) -> Void) {
        var start = 0
        for i in 0...b.count where i == b.count || b[i] == separator {
            body(UnsafeRawBufferPointer(rebasing: b[start..<i]))
            start = i + 1
        }
    }

    static func trimmed(_ b: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer {
        var s = 0, e = b.count
        while s < e && (b[s] == 0x20 || b[s] == 0x09) { s += 1 }
        while e > s && (b[e - 1] == 0x20 || b[e - 1] == 0x09) { e -= 1 }
        return UnsafeRawBufferPointer(rebasing: b[s..<e])
    }
}
