import ClusterConfig
import ClusterTLS
import Foundation
import Testing

/// Certificates made at test time with the `openssl` CLI: ECDSA P-256, one expired, one not yet
/// valid, a key of another pair.
final class Certificates: @unchecked Sendable {
    let directory: String

    init() throws {
        directory = NSTemporaryDirectory() + "clusterd-tls-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try make("site", days: "-days 30", name: "site.test")
        try make("other", days: "-days 30", name: "other.test")
        // -not_before/-not_after need OpenSSL 3.4; a CA-signed certificate can carry any dates.
        try run(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", path("ca.key"),
                 "-out", path("ca.pem"), "-subj", "/CN=test ca", "-days", "30"])
        try signed("expired", start: "20200101000000Z", end: "20210101000000Z")
        try signed("future", start: "20990101000000Z", end: "20991231000000Z")
    }

    deinit { try? FileManager.default.removeItem(atPath: directory) }

    func path(_ name: String) -> String { "\(directory)/\(name)" }

    func make(_ name: String, days: String, name cn: String) throws {
        try run(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", path("\(name).key"),
                 "-out", path("\(name).pem"), "-subj", "/CN=\(cn)", "-addext", "subjectAltName=DNS:\(cn)"] + days.split(separator: " ").map(String.init))
    }

    func signed(_ name: String, start: String, end: String) throws {
        try run(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", path("\(name).key"),
                 "-out", path("\(name).csr"), "-subj", "/CN=\(name).test"])
        try "[ca]\ndefault_ca=d\n[d]\ndatabase=\(path("\(name).db"))\nnew_certs_dir=\(directory)\nserial=\(path("\(name).srl"))\npolicy=p\ndefault_md=sha256\n[p]\ncommonName=supplied\n"
            .write(toFile: path("\(name).cnf"), atomically: true, encoding: .utf8)
        try "".write(toFile: path("\(name).db"), atomically: true, encoding: .utf8)
        try "01\n".write(toFile: path("\(name).srl"), atomically: true, encoding: .utf8)
        try run(["ca", "-batch", "-config", path("\(name).cnf"), "-cert", path("ca.pem"), "-keyfile", path("ca.key"), "-in", path("\(name).csr"),
                 "-out", path("\(name).pem"), "-startdate", start, "-enddate", end, "-notext"])
    }

    func run(_ arguments: [String]) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        p.arguments = arguments
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw CocoaError(.fileWriteUnknown) }
    }
}

@Suite(.serialized) struct TLSServerChecks {
    static let certs = try? Certificates()
    var now: Int64 { Int64(Date().timeIntervalSince1970) }

    func load(_ pairs: [(String, String)], configure: (inout TLS) -> Void = { _ in }) throws(ConfigError) -> TLSServer {
        let c = Self.certs!
        var tls = TLS(pairs: pairs.map { TLS.Pair(certificate: c.path($0.0), key: c.path($0.1)) })
        configure(&tls)
        return try TLSServer(tls, file: "c.json", keyPath: "listen[0].tls", now: now, kernelTLSAvailable: false)
    }

    func failure(_ pairs: [(String, String)], configure: (inout TLS) -> Void = { _ in }) -> ConfigError? {
        do { _ = try load(pairs, configure: configure) } catch { return error }
        return nil
    }

    @Test func loadsAnECDSAPairAndTellsItsSerial() throws {
        #expect(Self.certs != nil, "openssl CLI needed")
        let server = try load([("site.pem", "site.key"), ("other.pem", "other.key")])
        #expect(server.certificates.count == 2)
        #expect(server.certificates[0].subject.contains("site.test"))
        #expect(!server.certificates[0].serial.isEmpty)
        #expect(server.certificates[0].notAfter > now)
    }

    @Test func aKeyOfAnotherCertificateIsRefusedNamingBothFiles() {
        let e = failure([("site.pem", "other.key")])
        #expect(e?.keyPath == "listen[0].tls")
        #expect(e?.message.contains("site.pem") == true)
        #expect(e?.message.contains("other.key") == true)
        #expect(e?.message.contains("does not match") == true || e?.message.contains("mismatch") == true, "\(e?.message ?? "")")
        // The same for an SNI pair, at its own key path.
        let sni = failure([("site.pem", "site.key"), ("other.pem", "site.key")])
        #expect(sni?.keyPath == "listen[0].tls.certificates[0]")
    }

    @Test func anExpiredOrNotYetValidCertificateIsRefused() {
        let expired = failure([("expired.pem", "expired.key")])
        #expect(expired?.keyPath == "listen[0].tls.certificate")
        #expect(expired?.message.contains("has expired: notAfter 2021-01-01 00:00:00 UTC") == true, "\(expired?.message ?? "")")
        let future = failure([("future.pem", "future.key")])
        #expect(future?.message.contains("is not valid yet: notBefore 2099-01-01") == true, "\(future?.message ?? "")")
    }

    @Test func aMissingOrUnreadableFileIsNamed() {
        let missing = failure([("nope.pem", "site.key")])
        #expect(missing?.keyPath == "listen[0].tls.certificate")
        #expect(missing?.message.contains("cannot read \(Self.certs!.path("nope.pem"))") == true)
        let missingKey = failure([("site.pem", "nope.key")])
        #expect(missingKey?.keyPath == "listen[0].tls.key")
        // A key where the certificate should be: no certificate in it.
        let swapped = failure([("site.key", "site.pem")])
        #expect(swapped?.message.contains("no PEM certificate") == true, "\(swapped?.message ?? "")")
    }

    @Test func anUnknownCipherListIsRefused() {
        let e = failure([("site.pem", "site.key")]) { $0.ciphers = "NOT-A-CIPHER" }
        #expect(e?.keyPath == "listen[0].tls")
        #expect(e?.message.contains("ciphers") == true, "\(e?.message ?? "")")
        let ok = failure([("site.pem", "site.key")]) { $0.ciphers = "ECDHE+AESGCM"; $0.ciphersuites = "TLS_AES_128_GCM_SHA256"; $0.minVersion = .tls13 }
        #expect(ok == nil)
    }
}
