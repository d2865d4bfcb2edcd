import ClusterHTTP
import Logging

/// Code that runs around a router's routes: it may answer by itself, or call `next` (the rest of
/// the chain, then the route) and change what comes back. Middleware sees every request whose
/// path a route matches, whatever its method (so CORS can answer a preflight `OPTIONS`); a route's
/// errors reach it as responses (an `HTTPError` as its status, anything else as 500), and an
/// error a middleware throws becomes a response the same way.
///
/// Installing any middleware makes every route's answer go through `respondLater` (a task on the
/// worker's loop), sync routes too: a task that never waits is answered in the same loop turn,
/// for the price of the task.
public protocol RouterMiddleware: Sendable {
    func handle(_ request: Request, context: RequestContext, next: (Request, RequestContext) async throws -> Response) async throws -> Response
}

/// The middleware, outermost first, around one route.
struct MiddlewareChain: Sendable {
    let middleware: [any RouterMiddleware]
    let endpoint: Endpoint

    func run(from index: Int, _ request: Request, _ context: RequestContext) async throws -> Response {
        guard index < middleware.count else {
            do {
                switch endpoint {
                case .sync(let body): return try body(request, context)
                case .async(let body): return try await body(request, context)
                }
            } catch {
                return ErrorResponse.response(for: error, logger: context.logger)
            }
        }
        return try await middleware[index].handle(request, context: context) { request, context in
            try await run(from: index + 1, request, context)
        }
    }
}

/// Gives every request an id: the client's `X-Request-ID` when it sent a sane one (1 to 200
/// visible ASCII characters), else a new random one. The id is in `context.requestID`, in the
/// logger's metadata (`request-id`), and in the response's `X-Request-ID`.
public struct RequestIDMiddleware: RouterMiddleware {
    public let header: String

    public init(header: String = "X-Request-ID") {
        self.header = header
    }

    public func handle(_ request: Request, context: RequestContext, next: (Request, RequestContext) async throws -> Response) async throws -> Response {
        let id = request.headers[header].flatMap { Self.isAcceptable($0) ? $0 : nil } ?? Self.generate()
        var context = context
        context.requestID = id
        context.logger[metadataKey: "request-id"] = "\(id)"
        var response = try await next(request, context)
        response.setHeader(header, id)
        return response
    }

    static func isAcceptable(_ id: String) -> Bool {
        (1...200).contains(id.utf8.count) && id.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F }
    }

    /// 128 random bits as 32 hex digits.
    static func generate() -> String {
        var generator = SystemRandomNumberGenerator()
        let (high, low) = (generator.next() as UInt64, generator.next() as UInt64)
        func hex(_ v: UInt64) -> String {
            let digits = String(v, radix: 16)
            return String(repeating: "0", count: 16 - digits.count) + digits
        }
        return hex(high) + hex(low)
    }
}

/// Cross-origin resource sharing (the Fetch standard's CORS protocol) for the router's routes: a
/// preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is answered 204 here;
/// other requests from an allowed origin get `Access-Control-Allow-Origin` (and the rest) on their
/// response. An origin that is not allowed gets no CORS fields, which makes the browser refuse.
public struct CORSMiddleware: RouterMiddleware {
    public enum AllowOrigin: Sendable, Equatable {
        /// `*` (or, with credentials, the request's origin: browsers refuse `*` then).
        case all
        /// Only these origins (`https://app.example.com`), echoed back.
        case origins([String])
    }

    public var allowOrigin: AllowOrigin
    public var allowMethods: [HTTPMethod]
    public var allowHeaders: [String]
    public var exposeHeaders: [String]
    public var allowCredentials: Bool
    /// How long (seconds) a browser may cache a preflight's answer.
    public var maxAge: Int?

    public init(allowOrigin: AllowOrigin = .all, allowMethods: [HTTPMethod] = [.GET, .HEAD, .POST, .PUT, .PATCH, .DELETE],
                allowHeaders: [String] = ["Content-Type", "Authorization"], exposeHeaders: [String] = [],
                allowCredentials: Bool = false, maxAge: Int? = 600) {
        self.allowOrigin = allowOrigin
        self.allowMethods = allowMethods
        self.allowHeaders = allowHeaders
        self.exposeHeaders = exposeHeaders
        self.allowCredentials = allowCredentials
        self.maxAge = maxAge
    }

    public func handle(_ request: Request, context: RequestContext, next: (Request, RequestContext) async throws -> Response) async throws -> Response {
        guard let origin = request.headers["origin"] else { return try await next(request, context) }
        let allowed = allowedOrigin(origin)
        let isPreflight = request.method == .OPTIONS && request.headers.contains("access-control-request-method")
        var response = isPreflight ? Response(status: 204) : try await next(request, context)
        if allowOrigin != .all || allowCredentials { response.addHeader("Vary", "Origin") }
        guard let allowed else { return response }
        response.setHeader("Access-Control-Allow-Origin", allowed)
        if allowCredentials { response.setHeader("Access-Control-Allow-Credentials", "true") }
        if isPreflight {
            response.setHeader("Access-Control-Allow-Methods", allowMethods.map(\.description).joined(separator: ", "))
            if !allowHeaders.isEmpty { response.setHeader("Access-Control-Allow-Headers", allowHeaders.joined(separator: ", ")) }
            if let maxAge { response.setHeader("Access-Control-Max-Age", String(maxAge)) }
        } else if !exposeHeaders.isEmpty {
            response.setHeader("Access-Control-Expose-Headers", exposeHeaders.joined(separator: ", "))
        }
        return response
    }

    /// The `Access-Control-Allow-Origin` value for `origin`, or nil when it is not allowed.
    func allowedOrigin(_ origin: String) -> String? {
        switch allowOrigin {
        case .all: return allowCredentials ? origin : "*"
        case .origins(let list): return list.contains(origin) ? origin : nil
        }
    }
}
