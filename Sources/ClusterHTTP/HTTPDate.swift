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

    /// Parses an HTTP-date (RFC 9110 §5.6.7) to epoch seconds, nil if malformed. All three forms are
    /// accepted, as the RFC requires of recipients:
    ///
    ///     IMF-fixdate   Sun, 06 Nov 1994 08:49:37 GMT
    ///     rfc850-date   Sunday, 06-Nov-94 08:49:37 GMT   (obsolete)
    ///     asctime-date  Sun Nov  6 08:49:37 1994         (obsolete)
    ///
    /// An rfc850-date's two-digit year is taken in the century of `now` (epoch seconds), and a
    /// century earlier when that is more than 50 years after `now`'s year; `now` is read only for
    /// that form.
    public static func parse(_ bytes: UnsafeRawBufferPointer, now: @autoclosure () -> Int64) -> Int64? {
        func number(_ from: Int, _ count: Int) -> Int? {
            var n = 0
            for i in from..<from + count {
                let d = bytes[i] &- 0x30
                guard d < 10 else { return nil }
                n = n * 10 + Int(d)
            }
            return n
        }
        func isShortDayName(_ at: Int) -> Bool {
            (0..<7).contains { name(at, dayNamesPacked, $0) }
        }
        func month(_ at: Int) -> Int? {
            (0..<12).first { name(at, monthNamesPacked, $0) }.map { $0 + 1 }
        }
        func name(_ at: Int, _ packed: StaticString, _ index: Int) -> Bool {
            let p = packed.utf8Start + index * 3
            return bytes[at] == p[0] && bytes[at + 1] == p[1] && bytes[at + 2] == p[2]
        }
        /// "HH:MM:SS" at `at`.
        func time(_ at: Int) -> (Int, Int, Int)? {
            guard bytes[at + 2] == UInt8(ascii: ":"), bytes[at + 5] == UInt8(ascii: ":"),
                let h = number(at, 2), let m = number(at + 3, 2), let s = number(at + 6, 2), h < 24, m < 60, s < 61
            else { return nil }
            return (h, m, s)
        }
        func gmt(_ at: Int) -> Bool {
            bytes[at] == UInt8(ascii: "G") && bytes[at + 1] == UInt8(ascii: "M") && bytes[at + 2] == UInt8(ascii: "T")
        }
        let n = bytes.count
        var fields: (year: Int, month: Int, day: Int, time: (Int, Int, Int))? = nil
        if n == 29 && bytes[3] == UInt8(ascii: ",") {
            // IMF-fixdate: day-name "," SP day SP month SP year SP time-of-day SP "GMT"
            if isShortDayName(0), bytes[4] == 0x20, bytes[7] == 0x20, bytes[11] == 0x20, bytes[16] == 0x20, bytes[25] == 0x20, gmt(26),
                let day = number(5, 2), let m = month(8), let year = number(12, 4), let t = time(17)
            {
                fields = (year, m, day, t)
            }
        } else if n == 24 && bytes[3] == 0x20 {
            // asctime-date: day-name SP month SP ( 2DIGIT / ( SP DIGIT ) ) SP time-of-day SP year
            if isShortDayName(0), bytes[7] == 0x20, bytes[10] == 0x20, bytes[19] == 0x20, let m = month(4),
                let day = bytes[8] == 0x20 ? number(9, 1) : number(8, 2), let t = time(11), let year = number(20, 4)
            {
                fields = (year, m, day, t)
            }
        } else if n >= 30 && n <= 33 {
            // rfc850-date: day-name-l "," SP day "-" month "-" 2DIGIT SP time-of-day SP "GMT"
            let comma = n - 24
            let dayName = longDayNames.contains { s in
                s.utf8CodeUnitCount == comma && (0..<comma).allSatisfy { bytes[$0] == s.utf8Start[$0] }
            }
            let d = comma + 2
            if dayName, bytes[comma] == UInt8(ascii: ","), bytes[comma + 1] == 0x20, bytes[d + 2] == UInt8(ascii: "-"),
                bytes[d + 6] == UInt8(ascii: "-"), bytes[d + 9] == 0x20, bytes[d + 18] == 0x20, gmt(d + 19),
                let day = number(d, 2), let m = month(d + 3), let yy = number(d + 7, 2), let t = time(d + 10)
            {
                let thisYear = civil(epochSeconds: now()).year
                var year = thisYear - thisYear % 100 + yy
                if year > thisYear + 50 { year -= 100 }
                fields = (year, m, day, t)
            }
        }
        guard let f = fields, (1...31).contains(f.day) else { return nil }
        // Days from civil (Howard Hinnant's algorithm).
        let m = f.month
        let y = m <= 2 ? f.year - 1 : f.year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + f.day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        let days = era * 146097 + doe - 719468
        return Int64(days) * 86400 + Int64(f.time.0 * 3600 + f.time.1 * 60 + f.time.2)
    }

    static let longDayNames: [StaticString] = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
    static let dayNamesPacked: StaticString = "SunMonTueWedThuFriSat"
    static let monthNamesPacked: StaticString = "JanFebMarAprMayJunJulAugSepOctNovDec"

    /// RFC 9110 §13.1.5: whether an `If-Range` value lets a range be served for a representation
    /// with this strong `etag` and `lastModified` (epoch seconds) at `now`. An entity tag must
    /// match strongly (a weak `W/` tag never does); a date must equal Last-Modified exactly, and
    /// only counts when it is a strong validator (§8.8.2.2): with one-second timestamps, a file
    /// modified in the current second could change again within it, so the date is weak until
    /// that second has passed.
    public static func ifRangeAllows(_ value: UnsafeRawBufferPointer, etag: String, lastModified: Int64, now: Int64) -> Bool {
        // "A valid entity-tag can be distinguished from a valid HTTP-date by examining the first
        // three characters for a DQUOTE."
        if value.prefix(3).contains(UInt8(ascii: "\"")) { return value.elementsEqual(etag.utf8) }
        guard let date = parse(value, now: now) else { return false }
        return date == lastModified && lastModified < now
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

/// The `Date: ...\r\n` line, refreshed at most once a second (Hummingbird's DateCache idea). It
/// owns one fixed buffer for its whole life (freed in `deinit`): `line` is always the same memory,
/// rewritten in place when the second changes, so a `ResponseContext` can point at it directly.
public struct DateLineCache: ~Copyable {
    /// "Date: " + IMF-fixdate + CRLF.
    public static let length = 37
    public private(set) var second: Int64
    @usableFromInline let storage: UnsafeMutableRawBufferPointer

    /// A cache holding the line for `epochSeconds`.
    public init(epochSeconds: Int64 = 0) {
        storage = .allocate(byteCount: Self.length, alignment: 8)
        second = epochSeconds
        refresh(epochSeconds)
    }

    deinit { storage.deallocate() }

    /// The current line; valid, and the same memory, for as long as the cache lives.
    @inlinable
    public var line: UnsafeRawBufferPointer { UnsafeRawBufferPointer(storage) }

    /// Rewrites the line if the second changed.
    @inlinable
    public mutating func update(epochSeconds: Int64) {
        if epochSeconds != second { refresh(epochSeconds) }
    }

    @usableFromInline
    mutating func refresh(_ t: Int64) {
        second = t
        let date = HTTPDate.format(epochSeconds: t)
        precondition(date.count == Self.length - 8)
        storage.copyMemory(from: UnsafeRawBufferPointer(start: ("Date: " as StaticString).utf8Start, count: 6))
        date.withUnsafeBytes { UnsafeMutableRawBufferPointer(rebasing: storage[6..<Self.length - 2]).copyMemory(from: $0) }
        storage[Self.length - 2] = 0x0D
        storage[Self.length - 1] = 0x0A
    }
}
