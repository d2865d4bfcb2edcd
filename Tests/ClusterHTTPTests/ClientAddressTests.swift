import Testing
@testable import ClusterHTTP

@Suite struct ClientAddressTests {
    @Test func trustedNetworksMatchByPrefixAndUnmapIPv4() {
        let t = TrustedNetworks([([10, 0, 0, 0], 8), ([192, 168, 1, 0], 24), ([0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 0, count: 12), 32)])
        for yes in ["10.255.0.1", "192.168.1.200", "2001:db8::1", "::ffff:10.1.2.3"] { #expect(t.contains(ProxyAddress.parse(yes)!), "\(yes)") }
        for no in ["11.0.0.1", "192.168.2.1", "2001:db9::1", "::10.1.2.3", "127.0.0.1"] { #expect(!t.contains(ProxyAddress.parse(no)!), "\(no)") }
        #expect(TrustedNetworks([([0, 0, 0, 0], 0)]).contains(ProxyAddress.parse("203.0.113.1")!))
        #expect(TrustedNetworks([([1, 2, 3, 4], 32)]).contains(ProxyAddress.parse("1.2.3.4")!))
        #expect(!TrustedNetworks([([1, 2, 3, 4], 32)]).contains(ProxyAddress.parse("1.2.3.5")!))
        #expect(TrustedNetworks([]).isEmpty && !TrustedNetworks([]).contains(ProxyAddress.parse("1.2.3.4")!))
    }

    @Test func encodedV2HeadersParseBack() {
        for (text, port) in [("203.0.113.7", 5555), ("2001:db8::1:2", 65535), ("0.0.0.0", 0)] {
            let source = ProxyEndpoint(address: ProxyAddress.parse(text)!, port: UInt16(port))
            let bytes = ProxyProtocol.encodeV2(source: source)
            guard case .header(let h, let consumed) = ProxyProtocol.parse(bytes) else { Issue.record("\(text)"); continue }
            #expect(h.source == source && h.command == .proxy && consumed == bytes.count)
        }
        guard case .header(let local, 16) = ProxyProtocol.parse(ProxyProtocol.encodeV2(source: nil)) else { Issue.record("LOCAL"); return }
        #expect(local.command == .local && local.source == nil)
    }

    /// Answers with what `ForwardedHeaders.client` makes of the request ("nil" for nothing).
    struct ForwardedProbe: HTTPHandler {
        let trusted: TrustedNetworks
        func handle(_ request: HTTPRequest, _ response: inout HTTPResponseWriter) {
            response.respond(status: 200, body: ForwardedHeaders.client(of: request, trusted: trusted)?.description ?? "nil")
        }
    }

    /// Serves a request with `headers` and reads its forwarded client.
    func forwarded(_ headers: String, trusted: TrustedNetworks = TrustedNetworks([([10, 0, 0, 0], 8)])) -> String? {
        var state = HTTPConnectionState()
        let input = IOBuffer(), output = IOBuffer()
        var counters = HTTPCounters()
        input.write(Array("GET / HTTP/1.1\r\nHost: t\r\n\(headers)\r\n".utf8))
        _ = testDateLine.withUnsafeBytes { date in
            state.process(input, output: output, parser: HTTPParser(limits: HTTPLimits()), context: ResponseContext(dateLine: date),
                          handler: ForwardedProbe(trusted: trusted), counters: &counters)
        }
        let text = String(decoding: output.readableView, as: UTF8.self)
        let body = text.components(separatedBy: "\r\n\r\n").dropFirst().first
        return body == "nil" ? nil : body
    }

    @Test func forwardedForTakesTheNearestUntrustedHop() {
        #expect(forwarded("X-Forwarded-For: 198.51.100.9\r\n") == "198.51.100.9")
        #expect(forwarded("X-Forwarded-For: 1.1.1.1, 198.51.100.9, 10.0.0.2\r\n") == "198.51.100.9")
        #expect(forwarded("X-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 10.0.0.3 , 10.0.0.2\r\n") == "1.1.1.1")
        #expect(forwarded("x-forwarded-for: 10.0.0.3,10.0.0.2\r\n") == "10.0.0.3")
        #expect(forwarded("X-Forwarded-For: 2001:db8::7\r\n") == "2001:db8::7")
        // Garbage nearest us: nothing believed. Garbage further away: the last good hop.
        #expect(forwarded("X-Forwarded-For: 1.1.1.1, evil\r\n") == nil)
        #expect(forwarded("X-Forwarded-For: evil, 10.0.0.2\r\n") == "10.0.0.2")
        #expect(forwarded("X-Forwarded-For: \r\n") == nil)
        #expect(forwarded("X-Real-IP: 1.1.1.1\r\n") == nil)
        #expect(forwarded("Forwarded: for=192.0.2.60;proto=http;by=203.0.113.43\r\n") == "192.0.2.60")
        #expect(forwarded("Forwarded: for=\"[2001:db8:cafe::17]:4711\", for=10.0.0.9\r\n") == "2001:db8:cafe::17")
        #expect(forwarded("Forwarded: For=\"192.0.2.1:80\"\r\n") == "192.0.2.1")
        #expect(forwarded("Forwarded: for=unknown\r\n") == nil)
        // X-Forwarded-For wins over Forwarded when both are there.
        #expect(forwarded("Forwarded: for=192.0.2.60\r\nX-Forwarded-For: 198.51.100.1\r\n") == "198.51.100.1")
    }
}
