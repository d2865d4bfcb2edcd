import ClusterHTTP
import FoundationEssentials
import Logging

/// A response a route or a middleware builds: status, header fields, body. The engine adds
/// `Server`, `Date`, `Content-Length` and `Connection`; a `Content-Length` or `Transfer-Encoding`
/// given here is dropped (the engine frames the body).
public struct Response: Sendable {
    public var status: Int
    public var headers: [HTTPField]
    public var body: [UInt8]
    /// A body written piece by piece instead of `body` (`HTTPResponse.stream`: chunked, with
    /// back-pressure); the answer then always goes through a task.
    public var stream: ResponseBodyStream? = nil
    /// Close the connection after this answer.
    public var closeConnection = false

    public init(status: Int = 200, headers: [HTTPField] = [], body: [UInt8] = []) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    /// A streamed body: `stream` writes it while it is sent.
    public init(status: Int = 200, headers: [HTTPField] = [], stream: @escaping ResponseBodyStream) {
        self.init(status: status, headers: headers)
        self.stream = stream
    }

    /// A text body (`text/plain; charset=utf-8` unless `contentType` says otherwise).
    public init(status: Int = 200, contentType: String = "text/plain; charset=utf-8", headers: [HTTPField] = [], body: String) {
        var fields = [HTTPField("Content-Type", contentType)]
        fields.append(contentsOf: headers)
        self.init(status: status, headers: fields, body: Array(body.utf8))
    }

    /// `value` as JSON (`application/json`).
    public static func json<T: Encodable>(_ value: T, status: Int = 200, headers: [HTTPField] = []) throws -> Response {
        let body = try JSONEncoder().encode(value)
        return Response(status: status, headers: [HTTPField("Content-Type", "application/json")] + headers, body: Array(body))
    }

    /// The first value of the field `name` (case-insensitive), or nil.
    public func header(_ name: String) -> String? {
        headers.first { $0.name.lowercased() == name.lowercased() }?.value
    }

    /// Replaces every field called `name` with one of `value`.
    public mutating func setHeader(_ name: String, _ value: String) {
        headers.removeAll { $0.name.lowercased() == name.lowercased() }
        headers.append(HTTPField(name, value))
    }

    /// Adds a field, keeping those of the same name.
    public mutating func addHeader(_ name: String, _ value: String) {
        headers.append(HTTPField(name, value))
    }

    /// Adds a `Set-Cookie` field; throws `HTTPError` 500 for a cookie with a part it may not have
    /// (see `Cookie.headerValue`).
    public mutating func setCookie(_ cookie: Cookie) throws {
        headers.append(HTTPField("Set-Cookie", try cookie.headerValue()))
    }

    /// The response as the engine writes it, or nil when a field could break out of its line (a
    /// CR, LF or NUL in a value, a name that is not a token): the router answers 500 instead.
    var checked: HTTPResponse? {
        guard (100...999).contains(status) else { return nil }
        var framing = false
        for field in headers {
            guard !field.name.isEmpty, field.name.utf8.allSatisfy(Cookie.isTokenByte),
                  field.value.utf8.allSatisfy({ ($0 >= 0x20 && $0 != 0x7F) || $0 == 0x09 }) else { return nil }
            framing = framing || Self.isFraming(field.name)
        }
        // Copied only in the rare case that there is something to drop.
        let fields = framing ? headers.filter { !Self.isFraming($0.name) } : headers
        var response = HTTPResponse(status: status, contentType: nil, headers: fields, body: body)
        response.stream = stream
        response.closeConnection = closeConnection
        return response
    }

    /// `Content-Length` or `Transfer-Encoding`, in any case.
    static func isFraming(_ name: String) -> Bool {
        func equals(_ lower: String) -> Bool { name.utf8.count == lower.utf8.count && zip(name.utf8, lower.utf8).allSatisfy { asciiLower($0) == $1 } }
        return equals("content-length") || equals("transfer-encoding")
    }
}

/// What a route may return: how it becomes a `Response`. `String` (text), `[UInt8]` (bytes),
/// `Response`, `HTTPResponse`, optionals (nil → 204), and any `Encodable` type you declare
/// `ResponseEncodable` (JSON), arrays and dictionaries of them too.
public protocol ResponseEncodable: SendableMetatype {
    func response(for request: Request, context: RequestContext) throws -> Response
}

extension ResponseEncodable where Self: Encodable {
    /// JSON (`application/json`), 200.
    public func response(for request: Request, context: RequestContext) throws -> Response {
        try Response.json(self)
    }
}

extension Response: ResponseEncodable {
    public func response(for request: Request, context: RequestContext) throws -> Response { self }
}

extension HTTPResponse: ResponseEncodable {
    public func response(for request: Request, context: RequestContext) throws -> Response {
        var response = Response(status: status, headers: (contentType.map { [HTTPField("Content-Type", $0)] } ?? []) + headers, body: body)
        response.stream = stream
        response.closeConnection = closeConnection
        return response
    }
}

extension String: ResponseEncodable {
    /// `text/plain; charset=utf-8`, 200.
    public func response(for request: Request, context: RequestContext) throws -> Response {
        Response(body: self)
    }
}

extension Substring: ResponseEncodable {
    public func response(for request: Request, context: RequestContext) throws -> Response {
        Response(body: String(self))
    }
}

extension Array: ResponseEncodable where Element: Encodable {
    /// `[UInt8]` is a body of bytes (`application/octet-stream`); any other array is JSON.
    public func response(for request: Request, context: RequestContext) throws -> Response {
        if let bytes = self as? [UInt8] {
            return Response(headers: [HTTPField("Content-Type", "application/octet-stream")], body: bytes)
        }
        return try Response.json(self)
    }
}

extension Dictionary: ResponseEncodable where Key: Encodable, Value: Encodable {}

extension Optional: ResponseEncodable where Wrapped: ResponseEncodable {
    /// nil is 204 No Content.
    public func response(for request: Request, context: RequestContext) throws -> Response {
        guard let self else { return Response(status: 204) }
        return try self.response(for: request, context: context)
    }
}

/// How a thrown error becomes a response: `HTTPError` is its status with `{"error": reason}`;
/// anything else is logged and answered 500 `{"error": "internal server error"}`, so that no
/// detail of the server leaks to the client.
enum ErrorResponse {
    static func response(for error: any Error, logger: Logger) -> Response {
        if let error = error as? HTTPError, (400...599).contains(error.status) {
            return json(status: error.status, message: error.reason)
        }
        if error is CancellationError {
            // The task was cancelled (its client went away): nobody reads this answer.
            logger.debug("route cancelled")
        } else {
            logger.error("route failed: \(String(reflecting: error))")
        }
        return json(status: 500, message: "internal server error")
    }

    static func json(status: Int, message: String) -> Response {
        let body = (try? JSONEncoder().encode(["error": message])).map(Array.init) ?? Array(#"{"error":"error"}"#.utf8)
        return Response(status: status, headers: [HTTPField("Content-Type", "application/json")], body: body)
    }

    static func methodNotAllowed(allow: String) -> Response {
        var response = json(status: 405, message: "method not allowed")
        response.headers.append(HTTPField("Allow", allow))
        return response
    }

    /// `result` as the engine writes it; a response with a field that could break its head is
    /// logged and answered 500.
    static func checked(_ result: Response, logger: Logger) -> HTTPResponse {
        if let checked = result.checked { return checked }
        logger.error("a route's response has an invalid status or header field; answered 500")
        return HTTPResponse(status: 500, contentType: "application/json", body: #"{"error":"internal server error"}"#)
    }
}
