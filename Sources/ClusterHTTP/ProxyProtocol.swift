/// The PROXY protocol (HAProxy's `doc/proxy-protocol.txt`, versions 1 and 2): the header a proxy in
/// front of us sends first on each connection to say who the client really is. This file is only
/// the byte-level parser: it reads the first bytes a connection sent and says whether they hold a
/// whole header (and how many bytes it took), need more bytes, or can never be one. Which
/// listeners expect a header and which peers are trusted to send it is the worker's business.
///
/// Decisions the spec leaves to the receiver:
///  - Both versions are accepted wherever a header is expected (the spec asks receivers to).
///  - v1 `UNKNOWN` and v2 `AF_UNSPEC` (or a transport-unspecified v2 family) give
///    `family: .unspecified`: use the connection's own addresses (the spec allows this or a refusal).
///  - v2 `AF_UNIX` over STREAM also gives `.unspecified`: the client is a socket path on the
///    proxy's host, not an address we can log or match; the length must still cover the 216 bytes.
///  - v2 over DGRAM is refused: our listeners are streams, a UDP header is a proxy misconfiguration.
///  - v2 `LOCAL` (a proxy's own health check) accepts any defined family and skips the block whole.
///  - v2 TLVs are walked and bounds-checked (each must fit, as HAProxy checks) but not kept; the
///    CRC32C TLV is not verified. A header is refused when its length field is over `maxV2Length`
///    (default 1024, so a header is at most 1,040 bytes): enough for addresses and the usual TLVs
///    (ALPN, authority, SSL, cloud ids), small enough that a worker never buffers much to find out.
///  - v1 is strict: one space between fields, no leading zeros in IPv4 parts or ports, the whole
///    line with CRLF within 107 bytes, a lone CR or LF refused. After `UNKNOWN` comes a space or
///    the CRLF, and the rest of the line is ignored as the spec says.

/// Whether the header carries the client's addresses (`proxy`) or the proxy's own connection
/// (`local`: a health check; use the connection's real addresses). v1 headers are always `proxy`.
public enum ProxyCommand: Hashable, Sendable { case local, proxy }

/// The address family of `ProxyHeader.source` and `destination`; `unspecified` when there are none.
public enum ProxyFamily: Hashable, Sendable { case inet, inet6, unspecified }

/// An IPv4 or IPv6 address, in network byte order.
public struct ProxyAddress: Hashable, Sendable, CustomStringConvertible {
    public let isIPv6: Bool
    /// The 16 bytes of an IPv6 address big-endian in two halves; an IPv4 address is in `low`'s low 32 bits.
    public let high: UInt64
    public let low: UInt64

    public init(ipv4: UInt32) { isIPv6 = false; high = 0; low = UInt64(ipv4) }
    public init(ipv6High high: UInt64, low: UInt64) { isIPv6 = true; self.high = high; self.low = low }

    /// 4 bytes (IPv4) or 16 (IPv6), network order.
    public var bytes: [UInt8] {
        if !isIPv6 { return (0..<4).map { UInt8(truncatingIfNeeded: low >> (24 - 8 * UInt64($0))) } }
        return (0..<16).map { i in UInt8(truncatingIfNeeded: (i < 8 ? high : low) >> (56 - 8 * UInt64(i % 8))) }
    }

    /// IPv4 dotted decimal; IPv6 in RFC 5952's canonical form (lowercase, no leading zeros, the
    /// longest run of two or more zero groups as `::`, the first of equals), with an IPv4-mapped
    /// address written `::ffff:192.0.2.1` as its section 5 recommends.
    public var description: String {
        if !isIPv6 { return Self.dotted(UInt32(truncatingIfNeeded: low)) }
        if high == 0 && low >> 32 == 0xFFFF { return "::ffff:" + Self.dotted(UInt32(truncatingIfNeeded: low)) }
        let groups = (0..<8).map { i in UInt16(truncatingIfNeeded: (i < 4 ? high : low) >> (48 - 16 * UInt64(i % 4))) }
        var best = (start: 0, count: 0)
        var i = 0
        while i < 8 {
            var j = i
            while j < 8 && groups[j] == 0 { j += 1 }
            if j - i > best.count { best = (i, j - i) }
            i = j == i ? i + 1 : j
        }
        func hex(_ g: ArraySlice<UInt16>) -> String { g.map { String($0, radix: 16) }.joined(separator: ":") }
        if best.count < 2 { return hex(groups[...]) }
        return hex(groups[0..<best.start]) + "::" + hex(groups[(best.start + best.count)...])
    }

    static func dotted(_ v: UInt32) -> String {
        "\(v >> 24).\(v >> 16 & 0xFF).\(v >> 8 & 0xFF).\(v & 0xFF)"
    }
}

/// An address and a TCP port.
public struct ProxyEndpoint: Hashable, Sendable {
    public var address: ProxyAddress
    public var port: UInt16
    public init(address: ProxyAddress, port: UInt16) { self.address = address; self.port = port }
}

/// A parsed PROXY protocol header.
public struct ProxyHeader: Hashable, Sendable {
    /// 1 (text) or 2 (binary).
    public var version: Int
    public var command: ProxyCommand
    public var family: ProxyFamily
    /// The client as the proxy saw it: nil exactly when `family` is `unspecified`.
    public var source: ProxyEndpoint?
    /// The address the client connected to on the proxy: nil exactly when `family` is `unspecified`.
    public var destination: ProxyEndpoint?

    public init(version: Int, command: ProxyCommand, family: ProxyFamily, source: ProxyEndpoint?, destination: ProxyEndpoint?) {
        self.version = version
        self.command = command
        self.family = family
        self.source = source
        self.destination = destination
    }

    /// The client's address for logs (`description` of `source`), nil when the header has none.
    public var sourceText: String? { source?.address.description }
}

/// What the first bytes of a connection are.
public enum ProxyHeaderResult: Hashable, Sendable {
    /// A prefix of a valid header: read more (the caller bounds how long it waits).
    case incomplete
    /// A whole header in the first `consumed` bytes; what follows is the client's own stream.
    case header(ProxyHeader, consumed: Int)
    /// Not a header and no more bytes can make it one: close the connection and log the reason.
    case invalid(String)
}

public enum ProxyProtocol {
    /// The longest v1 line, CRLF included (the spec's `UNKNOWN` worst case).
    public static let v1MaxLength = 107
    /// The default bound on a v2 header's length field (addresses and TLVs).
    public static let defaultMaxV2Length = 1024
    /// The 12 bytes every v2 header starts with.
    public static let v2Signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
    static let v1Prefix: [UInt8] = Array("PROXY ".utf8)

    static let notAHeader = "expected a PROXY protocol header, but the connection's first bytes are neither \"PROXY \" (v1) nor the v2 signature: the client connected directly (not through the proxy), or the proxy does not send the PROXY protocol to this listener (HAProxy: send-proxy or send-proxy-v2)"

    /// Parses the header at the start of `bytes` (the first bytes read from a connection). Reads
    /// only as far as the header goes: a v1 line is at most 107 bytes, a v2 header at most
    /// 16 + `maxV2Length`. Never traps on any input.
    public static func parse(_ bytes: UnsafeRawBufferPointer, maxV2Length: Int = defaultMaxV2Length) -> ProxyHeaderResult {
        guard let first = bytes.first else { return .incomplete }
        switch first {
        case v1Prefix[0]: return parseV1(bytes)
        case v2Signature[0]: return parseV2(bytes, maxLength: maxV2Length)
        default: return .invalid(notAHeader)
        }
    }

    /// `parse` over an array (tests, the fuzzer).
    public static func parse(_ bytes: [UInt8], maxV2Length: Int = defaultMaxV2Length) -> ProxyHeaderResult {
        bytes.withUnsafeBytes { parse($0, maxV2Length: maxV2Length) }
    }

    // MARK: v1

    static let cr = UInt8(ascii: "\r"), lf = UInt8(ascii: "\n"), space = UInt8(ascii: " ")
    static let v1Protocols: [(token: [UInt8], family: ProxyFamily)] = [
        (Array("TCP4 ".utf8), .inet), (Array("TCP6 ".utf8), .inet6), (Array("UNKNOWN".utf8), .unspecified),
    ]

    static func parseV1(_ b: UnsafeRawBufferPointer) -> ProxyHeaderResult {
        let n = b.count
        for i in 0..<min(n, v1Prefix.count) where b[i] != v1Prefix[i] { return .invalid(notAHeader) }
        guard n > v1Prefix.count else { return .incomplete }
        // The protocol: the first token the bytes so far agree with.
        let start = v1Prefix.count
        var chosen: (token: [UInt8], family: ProxyFamily)? = nil
        for p in v1Protocols {
            let have = min(n - start, p.token.count)
            if (0..<have).allSatisfy({ b[start + $0] == p.token[$0] }) { chosen = p; break }
        }
        guard let chosen else {
            return .invalid("PROXY v1 header with a protocol other than TCP4, TCP6 or UNKNOWN (exactly one space after PROXY): the proxy sends something this server does not know")
        }
        let (token, family) = chosen
        let fieldsStart = start + token.count
        guard n >= fieldsStart else { return .incomplete }
        if family == .unspecified && n > fieldsStart && b[fieldsStart] != space && b[fieldsStart] != cr {
            return .invalid("PROXY v1 UNKNOWN must be followed by a space or the line's end (CRLF)")
        }
        // The line's end: CRLF within the first 107 bytes; nothing but printable text before it on
        // a TCP line (checked as bytes arrive, so garbage is refused without waiting for the CRLF).
        var crAt: Int? = nil
        for i in fieldsStart..<min(n, v1MaxLength) {
            let c = b[i]
            if c == cr { crAt = i; break }
            if c == lf { return .invalid("PROXY v1 line ends with a lone LF: the spec requires CRLF") }
            if family != .unspecified && !isV1FieldByte(c) {
                return .invalid("PROXY v1 \(family == .inet ? "TCP4" : "TCP6") line holds a byte (\(c)) that cannot be part of an address or a port")
            }
        }
        guard let cr = crAt else {
            return n >= v1MaxLength ? .invalid("PROXY v1 line has no CRLF within its first 107 bytes (the spec's maximum)") : .incomplete
        }
        guard cr + 1 < v1MaxLength else { return .invalid("PROXY v1 line has no CRLF within its first 107 bytes (the spec's maximum)") }
        guard cr + 1 < n else { return .incomplete }
        guard b[cr + 1] == lf else { return .invalid("PROXY v1 line has a CR not followed by LF: the spec requires CRLF") }
        let consumed = cr + 2
        if family == .unspecified {
            return .header(ProxyHeader(version: 1, command: .proxy, family: .unspecified, source: nil, destination: nil), consumed: consumed)
        }
        // Exactly four fields separated by single spaces: source, destination, their ports.
        var fields: [Range<Int>] = []
        var fieldStart = fieldsStart
        for i in fieldsStart...cr where i == cr || b[i] == space {
            guard i > fieldStart else { return .invalid("PROXY v1 line has an empty field (fields are separated by exactly one space)") }
            fields.append(fieldStart..<i)
            fieldStart = i + 1
        }
        let name = family == .inet ? "TCP4" : "TCP6"
        guard fields.count == 4 else {
            return .invalid("PROXY v1 \(name) line has \(fields.count) fields after the protocol, not 4 (source, destination, source port, destination port)")
        }
        func text(_ r: Range<Int>) -> String { String(decoding: UnsafeRawBufferPointer(rebasing: b[r]), as: UTF8.self) }
        var addresses: [ProxyAddress] = []
        for (r, what) in [(fields[0], "source"), (fields[1], "destination")] {
            let parsed = family == .inet ? parseIPv4(b, r).map { ProxyAddress(ipv4: $0) } : parseIPv6(b, r)
            guard let a = parsed else {
                return .invalid("PROXY v1 \(name) \(what) address \"\(text(r))\" is not a valid \(family == .inet ? "IPv4" : "IPv6") address")
            }
            addresses.append(a)
        }
        var ports: [UInt16] = []
        for (r, what) in [(fields[2], "source"), (fields[3], "destination")] {
            guard let p = parsePort(b, r) else {
                return .invalid("PROXY v1 \(what) port \"\(text(r))\" is not a decimal number 0-65535 without leading zeros")
            }
            ports.append(p)
        }
        let header = ProxyHeader(version: 1, command: .proxy, family: family,
                                 source: ProxyEndpoint(address: addresses[0], port: ports[0]),
                                 destination: ProxyEndpoint(address: addresses[1], port: ports[1]))
        return .header(header, consumed: consumed)
    }

    static func isV1FieldByte(_ c: UInt8) -> Bool {
        hexValue(c) != nil || c == UInt8(ascii: ".") || c == UInt8(ascii: ":") || c == space
    }

    static func hexValue(_ c: UInt8) -> UInt8? { hexDigitValue(c) }

    /// A decimal number of 1...`maxDigits` digits, no leading zero (but "0"), at most `max`.
    static func decimal(_ b: UnsafeRawBufferPointer, _ r: Range<Int>, maxDigits: Int, max: Int) -> Int? {
        guard (1...maxDigits).contains(r.count), r.count == 1 || b[r.lowerBound] != 0x30 else { return nil }
        var v = 0
        for i in r {
            guard (0x30...0x39).contains(b[i]) else { return nil }
            v = v * 10 + Int(b[i] - 0x30)  // at most 5 digits: no overflow
        }
        return v <= max ? v : nil
    }

    static func parsePort(_ b: UnsafeRawBufferPointer, _ r: Range<Int>) -> UInt16? {
        decimal(b, r, maxDigits: 5, max: 65535).map { UInt16($0) }
    }

    /// Exactly four dot-separated decimal parts 0-255 without leading zeros.
    static func parseIPv4(_ b: UnsafeRawBufferPointer, _ r: Range<Int>) -> UInt32? {
        var value: UInt32 = 0
        var parts = 0
        var partStart = r.lowerBound
        for i in r.lowerBound...r.upperBound where i == r.upperBound || b[i] == UInt8(ascii: ".") {
            guard parts < 4, let part = decimal(b, partStart..<i, maxDigits: 3, max: 255) else { return nil }
            value = value << 8 | UInt32(part)
            parts += 1
            partStart = i + 1
        }
        return parts == 4 ? value : nil
    }

    /// RFC 4291 text: eight groups of 1-4 hex digits, one `::` at most standing for one or more zero
    /// groups, the last 32 bits optionally dotted IPv4 (what `inet_ntop` writes for `::ffff:a.b.c.d`).
    static func parseIPv6(_ b: UnsafeRawBufferPointer, _ r: Range<Int>) -> ProxyAddress? {
        guard (2...45).contains(r.count) else { return nil }
        let colon = UInt8(ascii: ":")
        var groups: [UInt16] = []
        var gap: Int? = nil
        var i = r.lowerBound
        if b[i] == colon {
            guard b[i + 1] == colon else { return nil }
            gap = 0
            i += 2
        }
        while i < r.upperBound {
            var j = i
            var dotted = false
            while j < r.upperBound && b[j] != colon {
                if b[j] == UInt8(ascii: ".") { dotted = true }
                j += 1
            }
            if dotted {
                // The dotted IPv4 tail: the last piece, two groups.
                guard j == r.upperBound, groups.count <= 6, let v4 = parseIPv4(b, i..<j) else { return nil }
                groups.append(UInt16(truncatingIfNeeded: v4 >> 16))
                groups.append(UInt16(truncatingIfNeeded: v4))
                i = j
                break
            }
            guard (1...4).contains(j - i), groups.count < 8 else { return nil }
            var g: UInt16 = 0
            for k in i..<j {
                guard let d = hexValue(b[k]) else { return nil }
                g = g << 4 | UInt16(d)
            }
            groups.append(g)
            if j == r.upperBound { i = j; break }
            // b[j] is a colon: "::" marks the gap, a single one must have a group after it.
            if j + 1 < r.upperBound && b[j + 1] == colon {
                guard gap == nil else { return nil }
                gap = groups.count
                i = j + 2
            } else {
                guard j + 1 < r.upperBound else { return nil }
                i = j + 1
            }
        }
        if let gap {
            guard groups.count <= 7 else { return nil }
            groups.insert(contentsOf: repeatElement(0, count: 8 - groups.count), at: gap)
        }
        guard groups.count == 8 else { return nil }
        let high = groups[0..<4].reduce(UInt64(0)) { $0 << 16 | UInt64($1) }
        let low = groups[4..<8].reduce(UInt64(0)) { $0 << 16 | UInt64($1) }
        return ProxyAddress(ipv6High: high, low: low)
    }

    // MARK: v2

    static func parseV2(_ b: UnsafeRawBufferPointer, maxLength: Int) -> ProxyHeaderResult {
        let n = b.count
        for i in 0..<min(n, v2Signature.count) where b[i] != v2Signature[i] { return .invalid(notAHeader) }
        guard n > 12 else { return .incomplete }
        let version = b[12] >> 4, commandBits = b[12] & 0x0F
        guard version == 2 else {
            return .invalid("PROXY v2 signature followed by version \(version): only version 2 is defined, the proxy sends something this server does not know")
        }
        let command: ProxyCommand
        switch commandBits {
        case 0: command = .local
        case 1: command = .proxy
        default: return .invalid("PROXY v2 header with command \(commandBits): only LOCAL (0) and PROXY (1) are defined")
        }
        guard n > 13 else { return .incomplete }
        let familyBits = b[13] >> 4, transportBits = b[13] & 0x0F
        guard familyBits <= 3, transportBits <= 2 else {
            return .invalid("PROXY v2 header with address family \(familyBits) and transport \(transportBits): only UNSPEC/INET/INET6/UNIX (0-3) over UNSPEC/STREAM/DGRAM (0-2) are defined")
        }
        // The address block's size for the family, nil when the block is skipped whole.
        var addressBytes: Int? = nil
        var family = ProxyFamily.unspecified
        if command == .proxy {
            guard transportBits != 2 else {
                return .invalid("PROXY v2 header for a datagram (UDP) connection on a stream listener: the proxy is misconfigured")
            }
            if transportBits == 1 {
                switch familyBits {
                case 1: addressBytes = 12; family = .inet
                case 2: addressBytes = 36; family = .inet6
                case 3: addressBytes = 216  // AF_UNIX: two socket paths, kept as unspecified
                default: break
                }
            }
        }
        guard n >= 16 else { return .incomplete }
        let length = Int(b[14]) << 8 | Int(b[15])
        guard length <= maxLength else {
            return .invalid("PROXY v2 header announces \(length) bytes of addresses and TLVs, over this server's limit of \(maxLength)")
        }
        if let need = addressBytes, length < need {
            return .invalid("PROXY v2 header length \(length) is too short for its addresses (\(need) bytes)")
        }
        let total = 16 + length
        guard n >= total else { return .incomplete }
        if let need = addressBytes {
            // TLVs after the addresses: type (1 byte), length (2, big-endian), value; each must fit.
            var at = 16 + need
            while at < total {
                guard at + 3 <= total else { return .invalid("PROXY v2 header ends inside a TLV's type and length") }
                at += 3 + (Int(b[at + 1]) << 8 | Int(b[at + 2]))
                guard at <= total else { return .invalid("PROXY v2 header has a TLV running past the header's length") }
            }
        }
        var source: ProxyEndpoint? = nil, destination: ProxyEndpoint? = nil
        func word(_ at: Int, _ count: Int) -> UInt64 { (at..<at + count).reduce(UInt64(0)) { $0 << 8 | UInt64(b[$1]) } }
        switch family {
        case .inet:
            source = ProxyEndpoint(address: ProxyAddress(ipv4: UInt32(word(16, 4))), port: UInt16(word(24, 2)))
            destination = ProxyEndpoint(address: ProxyAddress(ipv4: UInt32(word(20, 4))), port: UInt16(word(26, 2)))
        case .inet6:
            source = ProxyEndpoint(address: ProxyAddress(ipv6High: word(16, 8), low: word(24, 8)), port: UInt16(word(48, 2)))
            destination = ProxyEndpoint(address: ProxyAddress(ipv6High: word(32, 8), low: word(40, 8)), port: UInt16(word(50, 2)))
        case .unspecified: break
        }
        return .header(ProxyHeader(version: 2, command: command, family: family, source: source, destination: destination), consumed: total)
    }
}
