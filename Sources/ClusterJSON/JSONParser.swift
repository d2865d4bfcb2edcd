/// Why a document is not JSON, with the 1-based line and column.
public struct JSONSyntaxError: Error, Equatable, CustomStringConvertible, Sendable {
    public let message: String
    public let line: Int
    public let column: Int
    public var description: String { "line \(line), column \(column): \(message)" }
}

/// A strict RFC 8259 parser: no trailing commas, no duplicate keys, depth-limited; comments only
/// where the caller allows them (config files: `Options.config`), never on the control protocol.
public struct JSONParser {
    /// What the parser accepts beyond RFC 8259.
    public struct Options: Sendable, Equatable {
        /// `// to end of line` and `/* ... */` between tokens (not inside strings).
        public var allowComments = false

        public init(allowComments: Bool = false) { self.allowComments = allowComments }

        /// RFC 8259 exactly: the control protocol and everything read from a peer.
        public static let strict = Options()
        /// Config files: strict JSON plus comments, which operators use to annotate them.
        public static let config = Options(allowComments: true)
    }

    private let bytes: [UInt8]
    private let options: Options
    private var index = 0
    private var depth = 0
    public static let maxDepth = 64

    public static func parse(_ text: String, options: Options = .strict) throws(JSONSyntaxError) -> JSON {
        try parse(Array(text.utf8), options: options)
    }

    public static func parse(_ bytes: [UInt8], options: Options = .strict) throws(JSONSyntaxError) -> JSON {
        var parser = JSONParser(bytes: bytes, options: options)
        // A UTF-8 byte order mark is tolerated (some editors write one).
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { parser.index = 3 }
        try parser.skipWhitespace()
        guard parser.current != nil else { throw parser.error("unexpected end of input (the document is empty)") }
        let value = try parser.parseValue()
        try parser.skipWhitespace()
        if parser.index != bytes.count { throw parser.error("unexpected text after the JSON value") }
        return value
    }

    private init(bytes: [UInt8], options: Options) {
        self.bytes = bytes
        self.options = options
    }

    private func error(_ message: String, at position: Int? = nil) -> JSONSyntaxError {
        var line = 1, column = 1
        for b in bytes[0..<min(position ?? index, bytes.count)] {
            if b == UInt8(ascii: "\n") { line += 1; column = 1 } else if b & 0xC0 != 0x80 { column += 1 }
        }
        return JSONSyntaxError(message: message, line: line, column: column)
    }

    /// "unexpected end of input" at the end, else `message`: a truncated file says so.
    private func expected(_ message: String) -> JSONSyntaxError {
        current == nil ? error("unexpected end of input (\(message))") : error(message)
    }

    private var current: UInt8? { index < bytes.count ? bytes[index] : nil }

    /// Whitespace, and comments when the options allow them.
    private mutating func skipWhitespace() throws(JSONSyntaxError) {
        while let b = current {
            if b == 0x20 || b == 0x0A || b == 0x0D || b == 0x09 {
                index += 1
            } else if b == UInt8(ascii: "/"), options.allowComments {
                try skipComment()
            } else {
                return
            }
        }
    }

    private mutating func skipComment() throws(JSONSyntaxError) {
        let start = index
        let next = index + 1 < bytes.count ? bytes[index + 1] : nil
        if next == UInt8(ascii: "/") {
            index += 2
            while let b = current, b != 0x0A { index += 1 }
        } else if next == UInt8(ascii: "*") {
            index += 2
            while true {
                guard let b = current else { throw error("unterminated /* comment (it starts here)", at: start) }
                if b == UInt8(ascii: "*"), index + 1 < bytes.count, bytes[index + 1] == UInt8(ascii: "/") {
                    index += 2
                    return
                }
                index += 1
            }
        } else {
            throw error("a comment starts with // or /*")
        }
    }

    private mutating func expect(_ literal: String, _ value: JSON) throws(JSONSyntaxError) -> JSON {
        let lit = Array(literal.utf8)
        guard index + lit.count <= bytes.count, Array(bytes[index..<index + lit.count]) == lit else {
            throw index + lit.count > bytes.count && bytes[index...].elementsEqual(lit.prefix(bytes.count - index))
                ? error("unexpected end of input (in \(literal))") : error("invalid literal (expected \(literal))")
        }
        index += lit.count
        return value
    }

    private mutating func parseValue() throws(JSONSyntaxError) -> JSON {
        guard let b = current else { throw error("unexpected end of input (expected a value)") }
        switch b {
        case UInt8(ascii: "{"): return try parseObject()
        case UInt8(ascii: "["): return try parseArray()
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): return try expect("true", .bool(true))
        case UInt8(ascii: "f"): return try expect("false", .bool(false))
        case UInt8(ascii: "n"): return try expect("null", .null)
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try parseNumber()
        default: throw error("unexpected character '\(Character(Unicode.Scalar(b)))'")
        }
    }

    private mutating func enter() throws(JSONSyntaxError) {
        depth += 1
        if depth > JSONParser.maxDepth { throw error("nesting deeper than \(JSONParser.maxDepth)") }
    }

    private mutating func parseObject() throws(JSONSyntaxError) -> JSON {
        try enter()
        defer { depth -= 1 }
        index += 1
        var object = JSONObject()
        var seen = Set<String>()
        try skipWhitespace()
        if current == UInt8(ascii: "}") { index += 1; return .object(object) }
        while true {
            try skipWhitespace()
            guard current == UInt8(ascii: "\"") else { throw expected("expected a string key in double quotes") }
            let keyStart = index
            let key = try parseString()
            if !seen.insert(key).inserted {
                index = keyStart
                throw error("duplicate key \"\(key)\"")
            }
            try skipWhitespace()
            guard current == UInt8(ascii: ":") else { throw expected("expected ':' after key \"\(key)\"") }
            index += 1
            try skipWhitespace()
            let value = try parseValue()
            object[key] = value
            guard try another(before: "}", orElse: "expected ',' or '}' after the value of \"\(key)\"") else { return .object(object) }
        }
    }

    private mutating func parseArray() throws(JSONSyntaxError) -> JSON {
        try enter()
        defer { depth -= 1 }
        index += 1
        var items: [JSON] = []
        try skipWhitespace()
        if current == UInt8(ascii: "]") { index += 1; return .array(items) }
        while true {
            try skipWhitespace()
            items.append(try parseValue())
            guard try another(before: "]", orElse: "expected ',' or ']' in array") else { return .array(items) }
        }
    }

    /// After an object member or an array element: true past a `,` (another must follow), false
    /// past the closing `close`; anything else is an error saying `message`.
    private mutating func another(before close: Unicode.Scalar, orElse message: @autoclosure () -> String) throws(JSONSyntaxError) -> Bool {
        try skipWhitespace()
        switch current {
        case UInt8(ascii: ","):
            let comma = index
            index += 1
            try skipWhitespace()
            if current == UInt8(ascii: close) { throw error("trailing comma before '\(close)' (JSON allows none)", at: comma) }
            return true
        case UInt8(ascii: close):
            index += 1
            return false
        default:
            throw expected(message())
        }
    }

    private mutating func parseHex4() throws(JSONSyntaxError) -> UInt32 {
        guard index + 4 <= bytes.count else { throw error("truncated \\u escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let c = bytes[index]
            let d: UInt32
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): d = UInt32(c - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): d = UInt32(c - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): d = UInt32(c - UInt8(ascii: "A") + 10)
            default: throw error("invalid \\u escape")
            }
            v = v << 4 | d
            index += 1
        }
        return v
    }

    private mutating func parseString() throws(JSONSyntaxError) -> String {
        index += 1
        var out: [UInt8] = []
        while true {
            guard let b = current else { throw error("unexpected end of input (unterminated string)") }
            if b == UInt8(ascii: "\"") { index += 1; break }
            if b < 0x20 { throw error("control character in string") }
            if b == UInt8(ascii: "\\") {
                index += 1
                guard let e = current else { throw error("unexpected end of input (unterminated escape)") }
                index += 1
                switch e {
                case UInt8(ascii: "\""): out.append(0x22)
                case UInt8(ascii: "\\"): out.append(0x5C)
                case UInt8(ascii: "/"): out.append(0x2F)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    var scalar = try parseHex4()
                    if (0xD800...0xDBFF).contains(scalar) {
                        guard index + 2 <= bytes.count, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u") else {
                            throw error("unpaired surrogate in \\u escape")
                        }
                        index += 2
                        let low = try parseHex4()
                        guard (0xDC00...0xDFFF).contains(low) else { throw error("invalid surrogate pair") }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    } else if (0xDC00...0xDFFF).contains(scalar) {
                        throw error("unpaired surrogate in \\u escape")
                    }
                    guard let u = Unicode.Scalar(scalar) else { throw error("invalid \\u escape") }
                    out.append(contentsOf: Array(String(Character(u)).utf8))
                default: throw error("invalid escape '\\\(Character(Unicode.Scalar(e)))'")
                }
            } else {
                out.append(b)
                index += 1
            }
        }
        guard let s = String(validating: out, as: UTF8.self) else { throw error("string is not valid UTF-8") }
        return s
    }

    private mutating func parseNumber() throws(JSONSyntaxError) -> JSON {
        let start = index
        var isInteger = true
        if current == UInt8(ascii: "-") { index += 1 }
        guard let first = current, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(first) else { throw expected("invalid number") }
        if first == UInt8(ascii: "0") {
            index += 1
            if let c = current, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(c) { throw error("leading zero in number") }
        } else {
            while let c = current, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(c) { index += 1 }
        }
        if current == UInt8(ascii: ".") {
            isInteger = false
            index += 1
            guard let c = current, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(c) else { throw expected("digit expected after '.'") }
            while let c = current, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(c) { index += 1 }
        }
        if current == UInt8(ascii: "e") || current == UInt8(ascii: "E") {
            isInteger = false
            index += 1
            if current == UInt8(ascii: "+") || current == UInt8(ascii: "-") { index += 1 }
            guard let c = current, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(c) else { throw expected("digit expected in exponent") }
            while let c = current, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(c) { index += 1 }
        }
        let text = String(decoding: bytes[start..<index], as: UTF8.self)
        if isInteger, let i = Int64(text) { return .integer(i) }
        guard let d = Double(text), d.isFinite else { throw error("number out of range") }
        return .number(d)
    }
}
