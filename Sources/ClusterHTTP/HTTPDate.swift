/// IMF-fixdate (RFC 9110 §5.6.7) for the Date header, computed from epoch seconds without libc so
/// the HTTP module stays pure. The worker formats it once a second and reuses the bytes.
public enum HTTPDate {
    /// Calendar fields (UTC) of an epoch time. `weekday` 0 = Sunday; `month` 1...12.
    public static func civil(epochSeconds t: Int64) -> (year: Int, month: Int, day: Int, hour: Int, minute: Int, second: Int, weekday: Int) {
        let days = t >= 0 ? t / 86400 : (t - 86399) / 86400
        let secs = Int(t - days * 86400)
        let weekday = Int((days + 4) % 7 + 7) % 7
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
        return (Int(year), month, day, secs / 3600, secs / 60 % 60, secs % 60, weekday)
    }

    public static let monthNames = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    public static let dayNames = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]

    /// Parses an IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT") to epoch seconds, nil if malformed.
    /// (The obsolete RFC 850 and asctime forms are not accepted; a conditional request with one is
    /// treated as unconditional, which RFC 9110 allows.)
    public static func parse(_ bytes: UnsafeRawBufferPointer) -> Int64? {
        guard bytes.count == 29, bytes[3] == UInt8(ascii: ","), bytes[4] == 0x20, bytes[7] == 0x20, bytes[11] == 0x20,
            bytes[16] == 0x20, bytes[19] == UInt8(ascii: ":"), bytes[22] == UInt8(ascii: ":"), bytes[25] == 0x20,
            bytes[26] == UInt8(ascii: "G"), bytes[27] == UInt8(ascii: "M"), bytes[28] == UInt8(ascii: "T")
        else { return nil }
        func number(_ from: Int, _ count: Int) -> Int? {
            var n = 0
            for i in from..<from + count {
                let d = bytes[i] &- 0x30
                guard d < 10 else { return nil }
                n = n * 10 + Int(d)
            }
            return n
        }
        let monthText = String(decoding: bytes[8..<11], as: UTF8.self)
        guard let day = number(5, 2), let year = number(12, 4), let hour = number(17, 2), let minute = number(20, 2),
            let second = number(23, 2), let monthIndex = monthNames.firstIndex(of: monthText),
            (1...31).contains(day), hour < 24, minute < 60, second < 61
        else { return nil }
        // Days from civil (Howard Hinnant's algorithm).
        let m = monthIndex + 1
        let y = m <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        let days = era * 146097 + doe - 719468
        return Int64(days) * 86400 + Int64(hour * 3600 + minute * 60 + second)
    }

    /// "Sun, 06 Nov 1994 08:49:37 GMT" (29 bytes).
    public static func format(epochSeconds t: Int64) -> [UInt8] {
        let c = civil(epochSeconds: t)
        let (weekday, day, month, year) = (c.weekday, c.day, c.month, c.year)
        let secs = c.hour * 3600 + c.minute * 60 + c.second
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
