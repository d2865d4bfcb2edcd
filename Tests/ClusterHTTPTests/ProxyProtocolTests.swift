import ClusterHTTP
import Testing

/// PROXY protocol headers (ProxyProtocol.swift) as a connection's first bytes: every good header is
/// parsed whole, with an HTTP request after it left unconsumed, and each of its prefixes is
/// incomplete; every malformed one is refused with a reason.

private func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }
private let request = bytes("GET / HTTP/1.1\r\nHost: a\r\n\r\n")

private func v4(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) -> ProxyAddress {
    ProxyAddress(ipv4: UInt32(a) << 24 | UInt32(b) << 16 | UInt32(c) << 8 | UInt32(d))
}

private func v6(_ groups: [UInt16]) -> ProxyAddress {
    ProxyAddress(ipv6High: groups[0..<4].reduce(0) { $0 << 16 | UInt64($1) }, low: groups[4..<8].reduce(0) { $0 << 16 | UInt64($1) })
}

private func endpoint(_ a: ProxyAddress, _ port: UInt16) -> ProxyEndpoint { ProxyEndpoint(address: a, port: port) }

/// The parse of `header` followed by an HTTP request: a header taking exactly `header`'s bytes;
/// every prefix of `header` incomplete; and the fuzzer's invariants over it.
@discardableResult
private func parsesExactly(_ header: [UInt8], sourceLocation: SourceLocation = #_sourceLocation) -> ProxyHeader? {
    let input = header + request
    guard case .header(let h, let consumed) = ProxyProtocol.parse(input) else {
        Issue.record("not a header: \(ProxyProtocol.parse(input))", sourceLocation: sourceLocation)
        return nil
    }
    #expect(consumed == header.count, "the request after the header is not the header's", sourceLocation: sourceLocation)
    #expect(Array(input[consumed...]) == request, sourceLocation: sourceLocation)
    for k in 0..<header.count {
        #expect(ProxyProtocol.parse(Array(header[..<k])) == .incomplete, "prefix of \(k) bytes", sourceLocation: sourceLocation)
    }
    #expect(ProxyProtocol.parse(header) == .header(h, consumed: consumed), sourceLocation: sourceLocation)
    ProxyFuzzDriver.run(input)
    return h
}

private func reason(_ input: [UInt8]) -> String? {
    if case .invalid(let why) = ProxyProtocol.parse(input) { return why }
    return nil
}

@Suite struct ProxyProtocolV1 {
    @Test func tcp4() {
        let h = parsesExactly(bytes("PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n"))
        #expect(h == ProxyHeader(version: 1, command: .proxy, family: .inet,
                                 source: endpoint(v4(192, 0, 2, 1), 56324), destination: endpoint(v4(198, 51, 100, 7), 443)))
        #expect(h?.sourceText == "192.0.2.1")
    }

    @Test func tcp4Extremes() {
        let h = parsesExactly(bytes("PROXY TCP4 255.255.255.255 0.0.0.0 65535 0\r\n"))
        #expect(h?.source == endpoint(v4(255, 255, 255, 255), 65535))
        #expect(h?.destination == endpoint(v4(0, 0, 0, 0), 0))
        // The longest TCP4 line the spec names: 56 bytes.
        #expect(bytes("PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n").count == 56)
        parsesExactly(bytes("PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n"))
    }

    @Test func tcp6() {
        let h = parsesExactly(bytes("PROXY TCP6 2001:db8::1 2001:DB8:0:0:0:0:0:2 1234 80\r\n"))
        #expect(h?.family == .inet6)
        #expect(h?.source == endpoint(v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1]), 1234))
        #expect(h?.destination == endpoint(v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 2]), 80))
        #expect(h?.sourceText == "2001:db8::1")
        // The longest TCP6 line the spec names: 104 bytes.
        let longest = bytes("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n")
        #expect(longest.count == 104)
        #expect(parsesExactly(longest)?.sourceText == "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")
    }

    @Test func tcp6MappedIPv4AsInetNtopWritesIt() {
        let h = parsesExactly(bytes("PROXY TCP6 ::ffff:192.0.2.1 ::1 1 2\r\n"))
        #expect(h?.source?.address == v6([0, 0, 0, 0, 0, 0xffff, 0xc000, 0x0201]))
        #expect(h?.sourceText == "::ffff:192.0.2.1")
        #expect(h?.destination?.address.description == "::1")
    }

    @Test func unknown() {
        let expected = ProxyHeader(version: 1, command: .proxy, family: .unspecified, source: nil, destination: nil)
        #expect(parsesExactly(bytes("PROXY UNKNOWN\r\n")) == expected)
        // "the receiver must ignore anything presented before the CRLF is found"
        #expect(parsesExactly(bytes("PROXY UNKNOWN ffff::1 ffff::2 65535 65535\r\n")) == expected)
        #expect(parsesExactly(bytes("PROXY UNKNOWN whatever \u{1}\u{7f}\r\n"))?.sourceText == nil)
        // The longest line: 107 bytes, CRLF included.
        let longest = bytes("PROXY UNKNOWN " + String(repeating: "x", count: 91) + "\r\n")
        #expect(longest.count == 107)
        parsesExactly(longest)
    }

    static let malformed: [(String, String)] = [
        ("PROXY TCP4 192.0.2.1 192.0.2.2 1 2\n", "lone LF"),
        ("PROXY TCP4 192.0.2.1 192.0.2.2 1 2\rX", "CR not followed by LF"),
        ("PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\r\n", "CR not followed by LF"),
        ("PROXY  TCP4 192.0.2.1 192.0.2.2 1 2\r\n", "protocol other than"),
        ("PROXY TCP5 192.0.2.1 192.0.2.2 1 2\r\n", "protocol other than"),
        ("PROXY tcp4 192.0.2.1 192.0.2.2 1 2\r\n", "protocol other than"),
        ("PROXY UDP4 192.0.2.1 192.0.2.2 1 2\r\n", "protocol other than"),
        ("PROXY UNKNOWNx\r\n", "UNKNOWN must be followed"),
        ("PROXY TCP4 192.0.2.1  192.0.2.2 1 2\r\n", "empty field"),
        ("PROXY TCP4 192.0.2.1 192.0.2.2 1 2 \r\n", "empty field"),
        ("PROXY TCP4 192.0.2.1 192.0.2.2 1\r\n", "3 fields"),
        ("PROXY TCP4 192.0.2.1 192.0.2.2 1 2 3\r\n", "5 fields"),
        ("PROXY TCP4 \r\n", "empty field"),
        ("PROXY TCP4 192.0.2.1 192.0.2.2 01 2\r\n", "source port \"01\""),
        ("PROXY TCP4 192.0.2.1 192.0.2.2 1 65536\r\n", "destination port \"65536\""),
        ("PROXY TCP4 192.0.2.1 192.0.2.2 1 99999999999999999999\r\n", "destination port"),
        ("PROXY TCP4 192.0.2.1 192.0.2.2 a 2\r\n", "source port \"a\""),
        ("PROXY TCP4 192.0.2.1 192.0.2.2 +1 2\r\n", "cannot be part of"),
        ("PROXY TCP4 192.0.2.1 192.0.2.2 -1 2\r\n", "cannot be part of"),
        ("PROXY TCP4 192.0.2.01 192.0.2.2 1 2\r\n", "source address \"192.0.2.01\""),
        ("PROXY TCP4 192.0.2.256 192.0.2.2 1 2\r\n", "source address"),
        ("PROXY TCP4 192.0.2 192.0.2.2 1 2\r\n", "source address"),
        ("PROXY TCP4 192.0.2.1.5 192.0.2.2 1 2\r\n", "source address"),
        ("PROXY TCP4 192.0.2.1 ::1 1 2\r\n", "destination address \"::1\" is not a valid IPv4"),
        ("PROXY TCP6 192.0.2.1 ::1 1 2\r\n", "source address \"192.0.2.1\" is not a valid IPv6"),
        ("PROXY TCP6 ::1::2 ::1 1 2\r\n", "source address"),
        ("PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n", "source address"),
        ("PROXY TCP6 1:2:3:4:5:6:7 ::1 1 2\r\n", "source address"),
        ("PROXY TCP6 1:2:3:4:5:6:7:8:: ::1 1 2\r\n", "source address"),
        ("PROXY TCP6 :1::2 ::1 1 2\r\n", "source address"),
        ("PROXY TCP6 1::2: ::1 1 2\r\n", "source address"),
        ("PROXY TCP6 ::: ::1 1 2\r\n", "source address"),
        ("PROXY TCP6 12345::1 ::1 1 2\r\n", "source address"),
        ("PROXY TCP6 ::1.2.3.4:5 ::1 1 2\r\n", "source address"),
        ("PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "cannot be part of"),
        ("PROXY TCP6 ::1 ::g 1 2\r\n", "cannot be part of"),
        ("PROXY TCP4 192.0.2.1\u{0} 192.0.2.2 1 2\r\n", "cannot be part of"),
        ("PROXY UNKNOWN " + String(repeating: "x", count: 92) + "\r\n", "107 bytes"),
        ("PROXY UNKNOWN " + String(repeating: "x", count: 93) + "\r\n", "107 bytes"),
        ("PROXY UNKNOWN " + String(repeating: "x", count: 91) + "\r\r\n", "CR not followed by LF"),
    ]

    @Test(arguments: malformed)
    func malformedIsInvalid(_ input: String, _ expected: String) {
        let why = reason(bytes(input) + request)
        #expect(why?.contains(expected) == true, "\(input.debugDescription): \(why ?? "not invalid")")
        ProxyFuzzDriver.run(bytes(input) + request)
    }

    @Test func refusedAsSoonAsTheBytesProveIt() {
        // Before the CRLF: a wrong protocol, a byte no address has, a lone LF.
        #expect(reason(bytes("PROXY X")) != nil)
        #expect(reason(bytes("PROXY TCP4 1.2.3.4 x")) != nil)
        #expect(reason(bytes("PROXY UNKNOWN\n")) != nil)
        #expect(reason(bytes("PROXY TCP4 1.2.3.4")) == nil)
        // 107 bytes and no CRLF yet.
        let long = bytes("PROXY UNKNOWN" + String(repeating: " ", count: 94))
        #expect(long.count == 107)
        #expect(reason(long)?.contains("107 bytes") == true)
        #expect(ProxyProtocol.parse(Array(long.dropLast())) == .incomplete)
    }
}

@Suite struct ProxyProtocolV2 {
    static let sig = ProxyProtocol.v2Signature

    static func v2(_ command: UInt8, _ family: UInt8, _ block: [UInt8], length: Int? = nil) -> [UInt8] {
        let n = length ?? block.count
        return sig + [command, family, UInt8(n >> 8), UInt8(n & 0xFF)] + block
    }

    static let tcp4Block: [UInt8] = [192, 0, 2, 1, 198, 51, 100, 7, 0xDC, 0x04, 0x01, 0xBB]

    @Test func tcp4() {
        let h = parsesExactly(Self.v2(0x21, 0x11, Self.tcp4Block))
        #expect(h == ProxyHeader(version: 2, command: .proxy, family: .inet,
                                 source: endpoint(v4(192, 0, 2, 1), 56324), destination: endpoint(v4(198, 51, 100, 7), 443)))
        #expect(h?.sourceText == "192.0.2.1")
    }

    @Test func tcp6() {
        let src: [UInt8] = [0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 0, count: 11) + [1]
        let dst: [UInt8] = [UInt8](repeating: 0, count: 15) + [1]
        let h = parsesExactly(Self.v2(0x21, 0x21, src + dst + [0x04, 0xD2, 0x00, 0x50]))
        #expect(h?.family == .inet6)
        #expect(h?.source == endpoint(v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1]), 1234))
        #expect(h?.destination == endpoint(v6([0, 0, 0, 0, 0, 0, 0, 1]), 80))
        #expect(h?.sourceText == "2001:db8::1")
        #expect(h?.source?.address.bytes == src)
    }

    @Test func localAndUnspecified() {
        let none = ProxyHeader(version: 2, command: .local, family: .unspecified, source: nil, destination: nil)
        #expect(parsesExactly(Self.v2(0x20, 0x00, [])) == none)
        // LOCAL ignores the family and the block, whatever they hold.
        #expect(parsesExactly(Self.v2(0x20, 0x11, Self.tcp4Block)) == none)
        #expect(parsesExactly(Self.v2(0x20, 0x12, [1, 2, 3])) == none)
        // PROXY over UNSPEC, AF_UNIX, or a family without a transport: use the real endpoints.
        let unspecified = ProxyHeader(version: 2, command: .proxy, family: .unspecified, source: nil, destination: nil)
        #expect(parsesExactly(Self.v2(0x21, 0x00, [])) == unspecified)
        #expect(parsesExactly(Self.v2(0x21, 0x10, [9, 9])) == unspecified)
        #expect(parsesExactly(Self.v2(0x21, 0x31, [UInt8](repeating: 0x2F, count: 216))) == unspecified)
    }

    @Test func tlvsAreSkipped() {
        let tlvs = ProxyFuzzDriver.tlv(0x01, Array("h2".utf8)) + ProxyFuzzDriver.tlv(0x02, Array("example.com".utf8))
            + ProxyFuzzDriver.tlv(0x04, []) + ProxyFuzzDriver.tlv(0xEA, [UInt8](repeating: 7, count: 300))
        let h = parsesExactly(Self.v2(0x21, 0x11, Self.tcp4Block + tlvs))
        #expect(h?.source == endpoint(v4(192, 0, 2, 1), 56324))
        let header = ProxyHeader(version: 2, command: .proxy, family: .inet6,
                                 source: endpoint(v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1]), 1), destination: endpoint(v6([0, 0, 0, 0, 0, 0, 0, 1]), 2))
        #expect(parsesExactly(ProxyFuzzDriver.v2Bytes(header, tlvs: tlvs)) == header)
    }

    @Test func lengthLimit() {
        let atLimit = Self.v2(0x21, 0x11, Self.tcp4Block + ProxyFuzzDriver.tlv(0xEE, [UInt8](repeating: 0, count: 1024 - 15)))
        #expect(atLimit.count == 16 + 1024)
        parsesExactly(atLimit)
        // Refused as soon as the length field arrives, without waiting for the bytes.
        #expect(reason(Self.v2(0x21, 0x11, [], length: 1025))?.contains("limit of 1024") == true)
        #expect(reason(Self.v2(0x21, 0x11, [], length: 0xFFFF))?.contains("over this server's limit") == true)
        #expect(ProxyProtocol.parse(Self.v2(0x21, 0x11, [], length: 2000), maxV2Length: 4096) == .incomplete)
    }

    static let malformed: [([UInt8], String)] = [
        (v2(0x11, 0x11, tcp4Block), "version 1"),
        (v2(0x31, 0x11, tcp4Block), "version 3"),
        (v2(0x22, 0x11, tcp4Block), "command 2"),
        (v2(0x2F, 0x11, tcp4Block), "command 15"),
        (v2(0x21, 0x41, tcp4Block), "address family 4"),
        (v2(0x21, 0x13, tcp4Block), "transport 3"),
        (v2(0x20, 0x13, tcp4Block), "transport 3"),
        (v2(0x21, 0x12, tcp4Block), "datagram"),
        (v2(0x21, 0x22, tcp4Block), "datagram"),
        (v2(0x21, 0x11, Array(tcp4Block[..<11])), "too short for its addresses (12 bytes)"),
        (v2(0x21, 0x21, tcp4Block), "too short for its addresses (36 bytes)"),
        (v2(0x21, 0x31, tcp4Block), "too short for its addresses (216 bytes)"),
        (v2(0x21, 0x11, tcp4Block + [0x01]), "inside a TLV"),
        (v2(0x21, 0x11, tcp4Block + [0x01, 0x00]), "inside a TLV"),
        (v2(0x21, 0x11, tcp4Block + [0x01, 0x00, 0x03, 0x61, 0x62]), "past the header's length"),
        (v2(0x21, 0x11, tcp4Block + [0x01, 0x00, 0x00, 0x01, 0xFF, 0xFF]), "past the header's length"),
        ([0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0B], "neither"),
        ([0x0D, 0x0A, 0x0D, 0x0D], "neither"),
    ]

    @Test(arguments: malformed)
    func malformedIsInvalid(_ input: [UInt8], _ expected: String) {
        let why = reason(input + request)
        #expect(why?.contains(expected) == true, "\(input): \(why ?? "not invalid")")
        ProxyFuzzDriver.run(input + request)
    }

    @Test func refusedAsSoonAsTheBytesProveIt() {
        #expect(reason(Self.sig + [0x11]) != nil)
        #expect(reason(Self.sig + [0x21, 0x12]) != nil)
        #expect(reason(Self.sig + [0x21, 0x21, 0x00, 0x0C]) != nil)
        #expect(ProxyProtocol.parse(Self.sig + [0x21, 0x21, 0x00, 0x24]) == .incomplete)
    }
}

@Suite struct ProxyProtocolStart {
    @Test func plainHTTPIsRefusedAtTheFirstByte() {
        #expect(ProxyProtocol.parse([]) == .incomplete)
        for input in ["GET / HTTP/1.1\r\n", "G", "\u{16}\u{03}\u{01}", "proxy TCP4", "PROXX", "\r\n\r\n\u{1}"] {
            #expect(reason(bytes(input))?.contains("neither \"PROXY \" (v1) nor the v2 signature") == true, "\(input.debugDescription)")
        }
        #expect(ProxyProtocol.parse(bytes("PROX")) == .incomplete)
        #expect(ProxyProtocol.parse([0x0D, 0x0A, 0x0D]) == .incomplete)
    }

    @Test func twoHeadersInARowTakeOnlyTheFirst() {
        let first = bytes("PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n")
        let input = first + bytes("PROXY TCP4 192.0.2.3 192.0.2.4 3 4\r\n")
        guard case .header(let h, let consumed) = ProxyProtocol.parse(input) else { Issue.record("not a header"); return }
        #expect(consumed == first.count)
        #expect(h.sourceText == "192.0.2.1")
    }
}

@Suite struct ProxyAddressText {
    static let cases: [([UInt16], String)] = [
        ([0, 0, 0, 0, 0, 0, 0, 0], "::"),
        ([0, 0, 0, 0, 0, 0, 0, 1], "::1"),
        ([1, 0, 0, 0, 0, 0, 0, 0], "1::"),
        ([0x2001, 0xdb8, 0, 0, 1, 0, 0, 1], "2001:db8::1:0:0:1"),  // the first of two equal runs
        ([0x2001, 0xdb8, 0, 1, 1, 1, 1, 1], "2001:db8:0:1:1:1:1:1"),  // a single zero group stays
        ([0x2001, 0, 0, 1, 0, 0, 0, 1], "2001:0:0:1::1"),  // the longest run
        ([0x2001, 0xDB8, 0xABCD, 0x12, 0, 0, 0, 0x0A], "2001:db8:abcd:12::a"),  // lowercase, no leading zeros
        ([0xfe80, 0, 0, 0, 0x0202, 0xb3ff, 0xfe1e, 0x8329], "fe80::202:b3ff:fe1e:8329"),
        ([0, 0, 0, 0, 0, 0xffff, 0x0a00, 0x0001], "::ffff:10.0.0.1"),
        ([0, 0, 0, 0, 0, 0, 0x0a00, 0x0001], "::a00:1"),  // IPv4-compatible (deprecated): plain hex
        ([0, 0, 0, 0, 0xffff, 0, 0x0a00, 0x0001], "::ffff:0:a00:1"),
        ([0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff], "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
    ]

    @Test(arguments: cases)
    func rfc5952(_ groups: [UInt16], _ text: String) {
        #expect(v6(groups).description == text)
        // The text parses back to the same address through a v1 line.
        let line = bytes("PROXY TCP6 \(text) ::1 1 2\r\n")
        guard case .header(let h, _) = ProxyProtocol.parse(line) else { Issue.record("\(text) does not parse"); return }
        #expect(h.source?.address == v6(groups))
    }

    @Test func ipv4() {
        #expect(v4(0, 0, 0, 0).description == "0.0.0.0")
        #expect(v4(10, 20, 30, 255).description == "10.20.30.255")
        #expect(v4(10, 20, 30, 255).bytes == [10, 20, 30, 255])
        #expect(!v4(1, 2, 3, 4).isIPv6)
    }
}
