import ClusterHTTP

// What the PROXY protocol fuzz target runs on one input. Also compiled into ClusterHTTPTests (a
// link there): the unit tests build headers with its encoders and `ProxyFuzzRegressions` replays
// Fuzz/proxy/crashers/ through `run`, so the fuzzer and the tests cannot drift apart.
//
// Invariants checked on every input (the whole input is a connection's first bytes):
//  - nothing traps (bounds, overflow, preconditions) and ASan sees no memory error;
//  - a header's `consumed` is at least 16 (v2) or 15 (v1), at most the input and the version's bound;
//  - a prefix decides nothing the whole input does not: a prefix that is a header is the whole
//    input's header with the same `consumed`, an invalid prefix means an invalid input, and every
//    prefix shorter than a header's `consumed` is incomplete;
//  - parsing exactly the consumed bytes gives the same header;
//  - the header is well formed (addresses exactly when the family says so, of that family) and
//    survives being written back as a v1 line and as a v2 header (which checks the IPv6 text form
//    against the IPv6 parser).

public enum ProxyFuzzDriver {
    /// `header` as a v1 line; nil for a v2 LOCAL header (v1 has no LOCAL).
    public static func v1Line(_ header: ProxyHeader) -> [UInt8]? {
        guard header.command == .proxy else { return nil }
        guard let s = header.source, let d = header.destination else { return Array("PROXY UNKNOWN\r\n".utf8) }
        let proto = header.family == .inet ? "TCP4" : "TCP6"
        return Array("PROXY \(proto) \(s.address) \(d.address) \(s.port) \(d.port)\r\n".utf8)
    }

    /// `header` as a v2 header (STREAM transport) followed by `tlvs` (already encoded).
    public static func v2Bytes(_ header: ProxyHeader, tlvs: [UInt8] = []) -> [UInt8] {
        var block: [UInt8] = []
        var familyByte: UInt8 = 0x00
        if let s = header.source, let d = header.destination {
            familyByte = header.family == .inet ? 0x11 : 0x21
            block = s.address.bytes + d.address.bytes + be16(s.port) + be16(d.port)
        }
        block += tlvs
        let command: UInt8 = header.command == .local ? 0x20 : 0x21
        return ProxyProtocol.v2Signature + [command, familyByte] + be16(UInt16(truncatingIfNeeded: block.count)) + block
    }

    /// One TLV: type, 16-bit big-endian length, value.
    public static func tlv(_ type: UInt8, _ value: [UInt8]) -> [UInt8] {
        [type] + be16(UInt16(truncatingIfNeeded: value.count)) + value
    }

    static func be16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xFF)] }

    /// Prefix lengths to try: every one up to 160 bytes (all of a v1 line, a v2 header's fixed
    /// part and its IPv6 addresses), then every 7th and the last.
    static func prefixLengths(_ count: Int) -> [Int] {
        Array(0..<min(count, 160)) + Array(stride(from: 160, to: count, by: 7)) + (count > 160 ? [count - 1] : [])
    }

    /// Runs one input; traps (precondition) when an invariant breaks.
    public static func run(_ data: [UInt8]) {
        let whole = ProxyProtocol.parse(data)
        var consumed: Int? = nil
        if case .header(let header, let c) = whole {
            consumed = c
            checkWellFormed(header, consumed: c, inputCount: data.count)
            precondition(ProxyProtocol.parse(Array(data[..<c])) == whole, "the consumed bytes alone parse differently")
            if let line = v1Line(header) {
                var asV1 = header
                asV1.version = 1
                precondition(ProxyProtocol.parse(line) == .header(asV1, consumed: line.count),
                             "written back as \(String(decoding: line, as: UTF8.self).debugDescription) it parses differently")
            }
            let v2 = v2Bytes(header)
            var asV2 = header
            asV2.version = 2
            precondition(ProxyProtocol.parse(v2) == .header(asV2, consumed: v2.count), "written back as v2 it parses differently")
        }
        for k in prefixLengths(data.count) {
            let part = ProxyProtocol.parse(Array(data[..<k]))
            switch part {
            case .header(_, let c):
                precondition(c <= k, "consumed \(c) of a \(k)-byte prefix")
                precondition(part == whole, "a \(k)-byte prefix is a header the whole input is not")
            case .invalid:
                if case .invalid = whole {} else { preconditionFailure("a \(k)-byte prefix is invalid, the whole input is not") }
            case .incomplete:
                if let c = consumed { precondition(k < c, "a \(k)-byte prefix holding the \(c)-byte header is incomplete") }
            }
        }
    }

    static func checkWellFormed(_ h: ProxyHeader, consumed: Int, inputCount: Int) {
        precondition(consumed <= inputCount, "consumed \(consumed) of \(inputCount) bytes")
        switch h.version {
        case 1:
            precondition(h.command == .proxy, "a v1 header is always PROXY")
            precondition((15...ProxyProtocol.v1MaxLength).contains(consumed), "v1 header of \(consumed) bytes")
        case 2:
            precondition((16...16 + ProxyProtocol.defaultMaxV2Length).contains(consumed), "v2 header of \(consumed) bytes")
        default:
            preconditionFailure("version \(h.version)")
        }
        switch h.family {
        case .unspecified:
            precondition(h.source == nil && h.destination == nil && h.sourceText == nil, "addresses without a family")
        case .inet, .inet6:
            let v6 = h.family == .inet6
            precondition(h.command == .proxy, "addresses in a LOCAL header")
            precondition(h.source?.address.isIPv6 == v6 && h.destination?.address.isIPv6 == v6, "addresses of another family")
            precondition(h.source?.address.bytes.count == (v6 ? 16 : 4), "address bytes")
            precondition(h.sourceText != nil, "no text form")
        }
    }
}
