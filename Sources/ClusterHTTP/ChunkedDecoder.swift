/// Decodes a chunked request body (RFC 9112 §7.1) in place: data bytes are moved down over the
/// chunk framing so the decoded body ends up contiguous right after the head. The caller drops the
/// framing it consumed after each call (`HTTPConnectionState` does), so a body in progress costs its
/// decoded bytes only, however it was framed.
///
/// Strict, byte by byte, per the grammar:
///
///     chunk          = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
///     chunk-size     = 1*HEXDIG
///     chunk-ext      = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
///     chunk-ext-name = token
///     chunk-ext-val  = token / quoted-string
///
/// At most 15 significant hex digits (leading zeros are not counted, the value must still fit), CRLF
/// everywhere, trailer fields validated like header fields (and discarded). Everything on a chunk line
/// but the significant digits and the CRLF (extensions, whitespace, leading zeros) is summed over the
/// request and bounded by `maxExtensionBytes`: extensions carry nothing clusterd uses, and without
/// a bound a client could send gigabytes of them around a one-byte body.
public struct ChunkedDecoder: Sendable, Equatable {
    enum State: Sendable, Equatable {
        case sizeStart
        case size
        /// BWS after the size: only `;` may follow (`5 \r\n` is refused).
        case sizeWhitespace
        /// After `;` (and BWS): a token must follow (`5;\r\n` is refused).
        case extensionNameStart
        case extensionName
        /// BWS after a name: `=` or `;` must follow.
        case extensionAfterName
        /// After `=` (and BWS): a token or a quoted-string.
        case extensionValueStart
        case extensionToken
        case extensionQuoted
        /// After a backslash inside a quoted-string.
        case extensionQuotedPair
        /// After a value: `;` (after optional BWS) or the line's end.
        case extensionAfterValue(sawWhitespace: Bool)
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
    /// Hex digits of the size after its leading zeros.
    var significantDigits = 0
    /// Digits of the current size seen so far (leading zeros included).
    var digits = 0
    /// Chunk-line bytes other than significant digits and CRLF, over the whole request.
    var extensionBytes = 0
    var trailerBytes = 0

    public init() {}

    /// Most significant hex digits in a chunk size: 15 digits (60 bits) always fit an `Int`.
    static let maxSizeDigits = 15

    /// Decodes raw bytes `base[raw..<end]`, writing data at `base[decoded...]`. Both indices advance.
    /// `decoded - bodyStart` is the body so far, bounded by `maxBody` (413 beyond). Returns `.needMore`
    /// only once every byte up to `end` is consumed.
    public mutating func decode(
        _ base: UnsafeMutableRawPointer, raw: inout Int, end: Int, decoded: inout Int, bodyStart: Int, maxBody: Int,
        maxTrailerBytes: Int, maxExtensionBytes: Int
    ) -> Progress {
        while raw < end {
            let c = base.load(fromByteOffset: raw, as: UInt8.self)
            switch state {
            case .sizeStart:
                guard let v = Self.hexValue(c) else { return .failed(.badChunk) }
                size = v
                digits = 1
                significantDigits = v == 0 ? 0 : 1
                state = .size
            case .size:
                if let v = Self.hexValue(c) {
                    if size == 0 {
                        // The digit before this one was a leading zero.
                        extensionBytes += 1
                        if extensionBytes > maxExtensionBytes { return .failed(.chunkExtensionsTooLong) }
                    }
                    digits += 1
                    if size != 0 || v != 0 { significantDigits += 1 }
                    if significantDigits > Self.maxSizeDigits { return .failed(.badChunk) }
                    size = size << 4 | v
                } else if c == 0x0D {
                    state = .sizeLF
                } else if c == UInt8(ascii: ";") || c == 0x20 || c == 0x09 {
                    state = c == UInt8(ascii: ";") ? .extensionNameStart : .sizeWhitespace
                    extensionBytes += 1
                    if extensionBytes > maxExtensionBytes { return .failed(.chunkExtensionsTooLong) }
                } else {
                    return .failed(.badChunk)
                }
            case .sizeWhitespace, .extensionNameStart, .extensionName, .extensionAfterName, .extensionValueStart,
                .extensionToken, .extensionQuoted, .extensionQuotedPair, .extensionAfterValue:
                if c == 0x0D && state.mayEndLine {
                    state = .sizeLF
                } else {
                    guard let next = state.extensionStep(c) else { return .failed(.badChunk) }
                    state = next
                    extensionBytes += 1
                    if extensionBytes > maxExtensionBytes { return .failed(.chunkExtensionsTooLong) }
                }
            case .sizeLF:
                guard c == 0x0A else { return .failed(.badChunk) }
                if size == 0 {
                    state = .trailerLineStart
                } else {
                    if decoded - bodyStart > maxBody - size { return .failed(.bodyTooLarge) }
                    state = .data(remaining: size)
                }
            case .data(let remaining):
                let n = min(remaining, end - raw)
                if decoded != raw { (base + decoded).copyMemory(from: base + raw, byteCount: n) }
                decoded += n
                raw += n
                state = remaining == n ? .dataCR : .data(remaining: remaining - n)
                continue
            case .dataCR:
                guard c == 0x0D else { return .failed(.badChunk) }
                state = .dataLF
            case .dataLF:
                guard c == 0x0A else { return .failed(.badChunk) }
                state = .sizeStart
            case .trailerLineStart:
                if c == 0x0D { state = .finalLF }
                else if isTchar(c) { state = .trailerName }
                else { return .failed(.badTrailer) }
                trailerBytes += 1
            case .trailerName:
                if c == UInt8(ascii: ":") { state = .trailerValue }
                else if !isTchar(c) { return .failed(.badTrailer) }
                trailerBytes += 1
            case .trailerValue:
                if c == 0x0D { state = .trailerLF }
                else if (c < 0x20 && c != 0x09) || c == 0x7F { return .failed(.badTrailer) }
                trailerBytes += 1
            case .trailerLF:
                guard c == 0x0A else { return .failed(.badTrailer) }
                state = .trailerLineStart
                trailerBytes += 1
            case .finalLF:
                guard c == 0x0A else { return .failed(.badTrailer) }
                raw += 1
                state = .done
                return .done
            case .done:
                return .done
            }
            raw += 1
            if trailerBytes > maxTrailerBytes { return .failed(.headTooLarge) }
        }
        return state == .done ? .done : .needMore
    }

    @inline(__always)
    static func hexValue(_ c: UInt8) -> Int? { hexDigitValue(c).map(Int.init) }
}

extension ChunkedDecoder.State {
    /// Whether a CR may end the chunk line here: after a name, a token value or a quoted-string,
    /// never after whitespace, `;` or `=`.
    var mayEndLine: Bool {
        switch self {
        case .extensionName, .extensionToken: return true
        case .extensionAfterValue(let sawWhitespace): return !sawWhitespace
        default: return false
        }
    }

    /// The state after extension byte `c` (not the line's CR), or nil if the grammar has no place for it.
    func extensionStep(_ c: UInt8) -> Self? {
        let isWhitespace = c == 0x20 || c == 0x09
        let semicolon = UInt8(ascii: ";")
        switch self {
        case .sizeWhitespace:
            if isWhitespace { return self }
            return c == semicolon ? .extensionNameStart : nil
        case .extensionNameStart:
            if isWhitespace { return self }
            return isTchar(c) ? .extensionName : nil
        case .extensionName:
            if isTchar(c) { return self }
            if isWhitespace { return .extensionAfterName }
            if c == semicolon { return .extensionNameStart }
            return c == UInt8(ascii: "=") ? .extensionValueStart : nil
        case .extensionAfterName:
            if isWhitespace { return self }
            if c == semicolon { return .extensionNameStart }
            return c == UInt8(ascii: "=") ? .extensionValueStart : nil
        case .extensionValueStart:
            if isWhitespace { return self }
            if c == UInt8(ascii: "\"") { return .extensionQuoted }
            return isTchar(c) ? .extensionToken : nil
        case .extensionToken:
            if isTchar(c) { return self }
            if isWhitespace { return .extensionAfterValue(sawWhitespace: true) }
            return c == semicolon ? .extensionNameStart : nil
        case .extensionQuoted:
            // qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text; quoted-pair = "\" ...
            if c == UInt8(ascii: "\"") { return .extensionAfterValue(sawWhitespace: false) }
            if c == UInt8(ascii: "\\") { return .extensionQuotedPair }
            return isWhitespace || (c >= 0x21 && c != 0x7F) ? self : nil
        case .extensionQuotedPair:
            // quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
            return isWhitespace || (c >= 0x21 && c != 0x7F) ? .extensionQuoted : nil
        case .extensionAfterValue:
            if isWhitespace { return .extensionAfterValue(sawWhitespace: true) }
            return c == semicolon ? .extensionNameStart : nil
        default:
            return nil
        }
    }
}
