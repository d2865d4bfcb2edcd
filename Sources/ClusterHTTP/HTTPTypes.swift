/// Request methods the engine knows by name; anything else that is a valid token is `.other`.
public enum HTTPMethod: UInt8, Sendable, CustomStringConvertible {
    case GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH, TRACE, CONNECT, other

    public var description: String {
        switch self {
        case .GET: return "GET"
        case .HEAD: return "HEAD"
        case .POST: return "POST"
        case .PUT: return "PUT"
        case .DELETE: return "DELETE"
        case .OPTIONS: return "OPTIONS"
        case .PATCH: return "PATCH"
        case .TRACE: return "TRACE"
        case .CONNECT: return "CONNECT"
        case .other: return "OTHER"
        }
    }
}

/// A request the engine refuses: the status to answer with (the connection is closed after it) and
/// a short reason for the body and the log. Thrown from a `ClusterApp` route or middleware, it is
/// the answer: its status, with `{"error": reason}` (the connection stays open).
public struct HTTPError: Error, Equatable, Sendable, CustomStringConvertible {
    public let status: Int
    public let reason: String

    public init(_ status: Int, _ reason: String) {
        self.status = status
        self.reason = reason
    }

    public var description: String { "\(status) \(reason)" }

    static let bareLF = HTTPError(400, "bare LF where CRLF is required")
    static let bareCR = HTTPError(400, "bare CR in request")
    static let badRequestLine = HTTPError(400, "malformed request line")
    static let badMethod = HTTPError(400, "invalid method")
    static let badTarget = HTTPError(400, "invalid request target")
    static let badVersion = HTTPError(400, "malformed HTTP version")
    static let unsupportedVersion = HTTPError(505, "HTTP version not supported")
    static let uriTooLong = HTTPError(414, "request line too long")
    static let headTooLarge = HTTPError(431, "request header fields too large")
    static let tooManyHeaders = HTTPError(431, "too many header fields")
    static let spaceBeforeColon = HTTPError(400, "whitespace between field name and colon")
    static let obsFold = HTTPError(400, "obsolete line folding")
    static let badFieldName = HTTPError(400, "invalid header field name")
    static let badFieldValue = HTTPError(400, "invalid character in header field value")
    static let missingHost = HTTPError(400, "missing Host header")
    static let duplicateHost = HTTPError(400, "duplicate Host header")
    static let badHost = HTTPError(400, "invalid Host header")
    static let emptyHost = HTTPError(400, "empty Host header")
    static let badContentLength = HTTPError(400, "invalid Content-Length")
    static let duplicateContentLength = HTTPError(400, "duplicate Content-Length")
    static let contentLengthAndTransferEncoding = HTTPError(400, "both Content-Length and Transfer-Encoding")
    static let transferEncodingNotChunked = HTTPError(400, "final transfer coding is not chunked")
    static let transferEncodingInHTTP10 = HTTPError(400, "Transfer-Encoding in an HTTP/1.0 request")
    static let unknownTransferCoding = HTTPError(501, "transfer coding not implemented")
    static let methodNotImplemented = HTTPError(501, "method not implemented")
    static let expectationFailed = HTTPError(417, "unsupported expectation")
    static let bodyTooLarge = HTTPError(413, "request body too large")
    static let badChunk = HTTPError(400, "malformed chunked body")
    static let chunkExtensionsTooLong = HTTPError(400, "chunk extensions too long")
    static let badTrailer = HTTPError(400, "malformed trailer section")
    public static let headerTimeout = HTTPError(408, "request header timeout")
    public static let bodyTimeout = HTTPError(408, "request body timeout")
    public static let internalError = HTTPError(500, "internal server error")
}

/// Reason phrases for the status line.
public enum HTTPStatus {
    public static func reasonPhrase(_ code: Int) -> StaticString {
        switch code {
        case 100: return "Continue"
        case 101: return "Switching Protocols"
        case 200: return "OK"
        case 201: return "Created"
        case 202: return "Accepted"
        case 204: return "No Content"
        case 206: return "Partial Content"
        case 301: return "Moved Permanently"
        case 302: return "Found"
        case 303: return "See Other"
        case 304: return "Not Modified"
        case 307: return "Temporary Redirect"
        case 308: return "Permanent Redirect"
        case 400: return "Bad Request"
        case 401: return "Unauthorized"
        case 403: return "Forbidden"
        case 404: return "Not Found"
        case 405: return "Method Not Allowed"
        case 408: return "Request Timeout"
        case 409: return "Conflict"
        case 410: return "Gone"
        case 411: return "Length Required"
        case 412: return "Precondition Failed"
        case 413: return "Content Too Large"
        case 414: return "URI Too Long"
        case 415: return "Unsupported Media Type"
        case 416: return "Range Not Satisfiable"
        case 417: return "Expectation Failed"
        case 422: return "Unprocessable Content"
        case 429: return "Too Many Requests"
        case 431: return "Request Header Fields Too Large"
        case 500: return "Internal Server Error"
        case 501: return "Not Implemented"
        case 502: return "Bad Gateway"
        case 503: return "Service Unavailable"
        case 504: return "Gateway Timeout"
        case 505: return "HTTP Version Not Supported"
        default: return "Unknown"
        }
    }

    /// A status code whose response never carries a body (1xx, 204, 304).
    @inlinable
    public static func forbidsBody(_ code: Int) -> Bool {
        code < 200 || code == 204 || code == 304
    }
}

/// Limits the parser and the connection enforce.
public struct HTTPLimits: Sendable, Equatable {
    public var maxHeaderBytes: Int = 16384
    public var maxHeaderCount: Int = 100
    public var maxBodyBytes: Int = 1_048_576
    /// Longest request line; longer → 414.
    public var maxRequestLine: Int = 8192
    /// Most requests served on one connection; 0 = unlimited.
    public var maxKeepAliveRequests: Int = 0
    /// Whether keep-alive is allowed at all.
    public var keepAlive: Bool = true
    /// Pipelined responses buffered before the connection stops parsing until they are written.
    public var maxPendingOutput: Int = 256 * 1024
    /// Chunk-line bytes other than the size's significant digits and CRLF (extensions, whitespace,
    /// leading zeros), summed over one request's chunks; more → 400. Well below `maxHeaderBytes`'s
    /// default: extensions carry nothing clusterd uses.
    public var maxChunkExtensionBytes: Int = 4096

    public init() {}

    /// Room a worker makes in a connection's input buffer before each read into it.
    public static let inputReadReserve = 16 * 1024
    /// Size of the worker's shared buffer for a connection's first read (what is left of it, a
    /// partial request, is copied into the connection's own buffer).
    public static let scratchReadBytes = 64 * 1024

    /// The most a connection's input buffer can hold (its allocated capacity): a partial request is
    /// at most a head and a body (`maxHeaderBytes + maxBodyBytes`; a chunked body's framing is dropped
    /// as it is decoded), a read makes room for `inputReadReserve` more, and the buffer at most
    /// doubles when it grows; a first read's leftover is at most `scratchReadBytes`.
    public var maxInputBufferBytes: Int {
        max(Self.scratchReadBytes, 2 * (maxHeaderBytes + maxBodyBytes + Self.inputReadReserve))
    }
}
