/// IMF-fixdate (RFC 9110 §5.6.7) for the Date header, computed from epoch seconds without libc so
/// the HTTP module stays pure. The worker formats it once a second and reuses the bytes.
public enum HTTPDate {
    /// "Sun, 06 Nov 1994 08:49:37 GMT" (29 bytes).
    public static func format(epochSeconds t: Int64) -> [UInt8] {
        let days = t >= 0 ? t / 86400 : (t - 86399) / 86400
        let secs = Int(t - days * 86400)
        let weekday = Int((days + 4) % 7 + 7) % 7  // 1970-01-01 was a Thursday
        // Civil-from-days (Howard Hinnant's algorithm).
        let z = days + 719468
        let era = (z >= 0 ? z : z - 146096) / 146097
        let doe = z - era * 146097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365
        var year = yoe + era * 400
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = Int(doy - (153 * mp + 2) / 5 + 1)
        let month = Int(mp < 10 ? mp + 3 : mp - 9)
        if month <= 2 { year += 1 }
        let names: [UInt8] = Array("SunMonTueWedThuFriSat".utf8)
        let months: [UInt8] = Array("JanFebMarAprMayJunJulAugSepOctNovDec".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(29)
        out += names[weekday * 3..<weekday * 3 + 3]
        out += Array(", ".utf8)
        out += twoDigits(day)
        out.append(0x20)
        out += months[(month - 1) * 3..<(month - 1) * 3 + 3]
        out.append(0x20)
        let y = Int(year)
        out += [UInt8(48 + y / 1000 % 10), UInt8(48 + y / 100 % 10), UInt8(48 + y / 10 % 10), UInt8(48 + y % 10)]
        out.append(0x20)
        out += twoDigits(secs / 3600)
        out.append(UInt8(ascii: ":"))
        out += twoDigits(secs / 60 % 60)
        out.append(UInt8(ascii: ":"))
        out += twoDigits(secs % 60)
        out += Array(" GMT".utf8)
        return out
    }

    static func twoDigits(_ v: Int) -> [UInt8] { [UInt8(48 + v / 10), UInt8(48 + v % 10)] }
}

/// The `Date: ...\r\n` line, refreshed at most once a second (Hummingbird's DateCache idea).
public struct DateLineCache {
    public private(set) var second: Int64 = .min
    /// "Date: " + IMF-fixdate + CRLF: always 37 bytes.
    public private(set) var line: [UInt8] = []

    public init() {}

    /// Refreshes the line if the second changed.
    @inlinable
    public mutating func update(epochSeconds: Int64) {
        if epochSeconds != second { refresh(epochSeconds) }
    }

    @usableFromInline
    mutating func refresh(_ t: Int64) {
        second = t
        line = Array("Date: ".utf8) + HTTPDate.format(epochSeconds: t) + [0x0D, 0x0A]
    }
}
