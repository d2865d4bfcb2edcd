/// Decodes a chunked request body (RFC 9112 §7.1) in place: data bytes are moved down over the
/// chunk framing so the decoded body ends up contiguous right after the head. Strict: hex sizes of at
/// most 15 digits, extensions restricted to `;`-separated token/quoted text, CRLF everywhere, trailer
/// fields validated like header fields (and discarded).
public struct ChunkedDecoder: Sendable, Equatable {
    enum State: Sendable, Equatable {
        case sizeStart
        case size
        case extensions(sawSemicolon: Bool, inQuotes: Bool)
        case sizeLF
        case data(remaining: Int)
        case dataCR
        case dataLF
        case trailerLineStart
        case trailerName
        case trailerValue
        case trailerLF
        case finalLF
        case done
    }

    public enum Progress: Equatable {
        case needMore
        case done
        case failed(HTTPError)
    }

    var state: State = .sizeStart
    var size = 0
    var digits = 0
    var lineBytes = 0
    var trailerBytes = 0

    public init() {}

    static let maxLine = 4096

    /// Decodes raw bytes `base[raw..<end]`, writing data at `base[decoded...]`. Both indices advance.
    /// `decoded - bodyStart` is the body so far, bounded by `maxBody` (413 beyond).
    public mutating func decode(_ base: UnsafeMutableRawPointer, raw: inout Int, end: Int, decoded: inout Int, bodyStart: Int, maxBody: Int, maxTrailerBytes: Int) -> Progress {
        while raw < end {
            let c = base.load(fromByteOffset: raw, as: UInt8.self)
            switch state {
            case .sizeStart:
                guard let v = Self.hexValue(c) else { return .failed(.badChunk) }
                size = v
                digits = 1
                lineBytes = 1
                state = .size
                raw += 1
            case .size:
                lineBytes += 1
                if let v = Self.hexValue(c) {
                    digits += 1
                    if digits > 15 { return .failed(.badChunk) }
                    size = size << 4 | v
                } else if c == 0x0D {
                    state = .sizeLF
                } else if c == UInt8(ascii: ";") {
                    state = .extensions(sawSemicolon: true, inQuotes: false)
                } else if c == 0x20 || c == 0x09 {
                    state = .extensions(sawSemicolon: false, inQuotes: false)
                } else {
                    return .failed(.badChunk)
                }
                raw += 1
            case .extensions(let sawSemicolon, let inQuotes):
                lineBytes += 1
                if lineBytes > Self.maxLine { return .failed(.badChunk) }
                if inQuotes {
                    if c == UInt8(ascii: "\"") { state = .extensions(sawSemicolon: true, inQuotes: false) }
                    else if c < 0x20 && c != 0x09 || c == 0x7F { return .failed(.badChunk) }
                } else if c == 0x0D {
                    state = .sizeLF
                } else if c == 0x20 || c == 0x09 {
                } else if c == UInt8(ascii: ";") {
                    state = .extensions(sawSemicolon: true, inQuotes: false)
                } else if !sawSemicolon {
                    return .failed(.badChunk)
                } else if c == UInt8(ascii: "\"") {
                    state = .extensions(sawSemicolon: true, inQuotes: true)
                } else if !(isTchar(c) || c == UInt8(ascii: "=")) {
                    return .failed(.badChunk)
                }
                raw += 1
            case .sizeLF:
                guard c == 0x0A else { return .failed(.badChunk) }
                raw += 1
                if size == 0 {
                    state = .trailerLineStart
                } else {
                    if decoded - bodyStart + size > maxBody { return .failed(.bodyTooLarge) }
                    state = .data(remaining: size)
                }
            case .data(let remaining):
                let n = min(remaining, end - raw)
                if decoded != raw { (base + decoded).copyMemory(from: base + raw, byteCount: n) }
                decoded += n
                raw += n
                state = remaining == n ? .dataCR : .data(remaining: remaining - n)
            case .dataCR:
                guard c == 0x0D else { return .failed(.badChunk) }
                state = .dataLF
                raw += 1
            case .dataLF:
                guard c == 0x0A else { return .failed(.badChunk) }
                state = .sizeStart
                raw += 1
            case .trailerLineStart:
                if c == 0x0D { state = .finalLF }
                else if isTchar(c) { state = .trailerName }
                else { return .failed(.badTrailer) }
                raw += 1
                trailerBytes += 1
            case .trailerName:
                if c == UInt8(ascii: ":") { state = .trailerValue }
                else if !isTchar(c) { return .failed(.badTrailer) }
                raw += 1
                trailerBytes += 1
            case .trailerValue:
                if c == 0x0D { state = .trailerLF }
                else if (c < 0x20 && c != 0x09) || c == 0x7F { return .failed(.badTrailer) }
                raw += 1
                trailerBytes += 1
            case .trailerLF:
                guard c == 0x0A else { return .failed(.badTrailer) }
                state = .trailerLineStart
                raw += 1
                trailerBytes += 1
            case .finalLF:
                guard c == 0x0A else { return .failed(.badTrailer) }
                raw += 1
                state = .done
                return .done
            case .done:
                return .done
            }
            if trailerBytes > maxTrailerBytes { return .failed(.headTooLarge) }
        }
        return state == .done ? .done : .needMore
    }

    @inline(__always)
    static func hexValue(_ c: UInt8) -> Int? {
        switch c {
        case 0x30...0x39: return Int(c - 0x30)
        case 0x41...0x46: return Int(c - 0x41 + 10)
        case 0x61...0x66: return Int(c - 0x61 + 10)
        default: return nil
        }
    }
}
