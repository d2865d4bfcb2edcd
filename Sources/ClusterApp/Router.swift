import Cluster
import ClusterHTTP
import Logging

/// What a route gets besides the request: a logger (tagged with the request id when
/// `RequestIDMiddleware` runs), that id, and values middleware hands to the routes after it.
public struct RequestContext: Sendable {
    public var logger: Logger
    /// Set by `RequestIDMiddleware`.
    public var requestID: String?
    /// Whatever a middleware wants a route to know (an authenticated user, a tenant).
    public var values: [String: any Sendable] = [:]

    public init(logger: Logger, requestID: String? = nil) {
        self.logger = logger
        self.requestID = requestID
    }
}

/// Routes by method and path, Hummingbird style:
///
///     let router = Router()
///     router.get("/todos/:id") { request, context in try await store.todo(request.parameters.require("id", as: Int.self)) }
///     Cluster.main { context in try router.handler(context: context) }
///
/// Paths are segments split at `/` (empty ones ignored, so `/todos/` is `/todos`): literals,
/// `:name` (one segment, a parameter), `*` (any one segment) and a final `**` (the rest of the
/// path, `parameters.catchAll`). A literal beats a parameter, which beats `*`, which beats `**`.
/// When the path matches but the method does not, the answer is 405 with `Allow`; `HEAD` is
/// answered by the `GET` route (without the body) unless a `HEAD` route exists. A path no route
/// matches goes to the fallback handler (by default the stock one: `/healthz`, `/readyz`,
/// `/metrics`, the config's routes and static files), so an app overrides one of those only by
/// routing the same path.
///
/// Add routes and middleware before `handler(...)`: it takes a copy, and the router is not meant
/// to change while it serves.
public final class Router: @unchecked Sendable {
    var table = RouteTable()
    var middleware: [any RouterMiddleware] = []

    public init() {}

    /// Adds a middleware; each request to a route passes through them in the order they were added
    /// (the first added is the outermost).
    public func add(middleware: any RouterMiddleware) {
        self.middleware.append(middleware)
    }

    /// An async route: it runs as a task on the worker's loop (`respondLater`), so it may await.
    @discardableResult
    public func on<R: ResponseEncodable>(_ path: String, method: HTTPMethod, use handler: @escaping @Sendable (Request, RequestContext) async throws -> R) -> Self {
        table.add(path: path, method: method, endpoint: .async { request, context in try await handler(request, context).response(for: request, context: context) })
        return self
    }

    /// An async route that takes its request body as it arrives (`request.bodyStream`), for uploads
    /// larger than `http.maxBodyBytes` or bodies passed on as they come: `maxBodyBytes` does not
    /// apply, the route bounds the body itself; `request.body` is empty. The connection is read only
    /// as fast as the route takes the pieces.
    @discardableResult
    public func on<R: ResponseEncodable>(_ path: String, method: HTTPMethod, streamingBody: Bool,
                                         use handler: @escaping @Sendable (Request, RequestContext) async throws -> R) -> Self {
        table.add(path: path, method: method, endpoint: .async { request, context in try await handler(request, context).response(for: request, context: context) },
                  streamsBody: streamingBody)
        return self
    }

    /// A synchronous route (its closure does not `await`): answered inline in `handle`, without a
    /// task, when no middleware is installed.
    @discardableResult
    public func on<R: ResponseEncodable>(_ path: String, method: HTTPMethod, use handler: @escaping @Sendable (Request, RequestContext) throws -> R) -> Self {
        table.add(path: path, method: method, endpoint: .sync { request, context in try handler(request, context).response(for: request, context: context) })
        return self
    }

    /// The handler to give `Cluster.main`: these routes, then `fallback` for paths none matches.
    /// Its logger (`context.logger`) is made here, through swift-log's `LoggingSystem` as the app
    /// set it up, labelled `label` (by default the app's name, `Cluster.app.name`).
    public func handler<Fallback: HTTPHandler>(fallback: Fallback, label: String? = nil) -> RouterHandler<Fallback> {
        RouterHandler(table: table, middleware: middleware, fallback: fallback, logger: Logger(label: label ?? Cluster.app.name))
    }

    /// These routes in front of the stock handler of `context` (`StockHandler(context:)`).
    public func handler(context: HandlerContext, label: String? = nil) throws -> RouterHandler<StockHandler> {
        handler(fallback: try StockHandler(context: context), label: label)
    }
}

extension Router {
    @discardableResult
    public func get<R: ResponseEncodable>(_ path: String, use handler: @escaping @Sendable (Request, RequestContext) async throws -> R) -> Self { on(path, method: .GET, use: handler) }
    @discardableResult
    public func get<R: ResponseEncodable>(_ path: String, use handler: @escaping @Sendable (Request, RequestContext) throws -> R) -> Self { on(path, method: .GET, use: handler) }
    @discardableResult
    public func head<R: ResponseEncodable>(_ path: String, use handler: @escaping @Sendable (Request, RequestContext) async throws -> R) -> Self { on(path, method: .HEAD, use: handler) }
    @discardableResult
    public func head<R: ResponseEncodable>(_ path: String, use handler: @escaping @Sendable (Request, RequestContext) throws -> R) -> Self { on(path, method: .HEAD, use: handler) }
    @discardableResult
    public func post<R: ResponseEncodable>(_ path: String, use handler: @escaping @Sendable (Request, RequestContext) async throws -> R) -> Self { on(path, method: .POST, use: handler) }
    @discardableResult
    public func post<R: ResponseEncodable>(_ path: String, use handler: @escaping @Sendable (Request, RequestContext) throws -> R) -> Self { on(path, method: .POST, use: handler) }
    @discardableResult
    public func put<R: ResponseEncodable>(_ path: String, use handler: @escaping @Sendable (Request, RequestContext) async throws -> R) -> Self { on(path, method: .PUT, use: handler) }
    @discardableResult
    public func put<R: ResponseEncodable>(_ path: String, use handler: @escaping @Sendable (Request, RequestContext) throws -> R) -> Self { on(path, method: .PUT, use: handler) }
    @discardableResult
    public func patch<R: ResponseEncodable>(_ path: String, use handler: @escaping @Sendable (Request, RequestContext) async throws -> R) -> Self { on(path, method: .PATCH, use: handler) }
    @discardableResult
    public func patch<R: ResponseEncodable>(_ path: String, use handler: @escaping @Sendable (Request, RequestContext) throws -> R) -> Self { on(path, method: .PATCH, use: handler) }
    @discardableResult
    public func delete<R: ResponseEncodable>(_ path: String, use handler: @escaping @Sendable (Request, RequestContext) async throws -> R) -> Self { on(path, method: .DELETE, use: handler) }
    @discardableResult
    public func delete<R: ResponseEncodable>(_ path: String, use handler: @escaping @Sendable (Request, RequestContext) throws -> R) -> Self { on(path, method: .DELETE, use: handler) }
    @discardableResult
    public func options<R: ResponseEncodable>(_ path: String, use handler: @escaping @Sendable (Request, RequestContext) async throws -> R) -> Self { on(path, method: .OPTIONS, use: handler) }
    @discardableResult
    public func options<R: ResponseEncodable>(_ path: String, use handler: @escaping @Sendable (Request, RequestContext) throws -> R) -> Self { on(path, method: .OPTIONS, use: handler) }
}

/// A route's code, erased to a `Response`.
enum Endpoint: Sendable {
    case sync(@Sendable (Request, RequestContext) throws -> Response)
    case async(@Sendable (Request, RequestContext) async throws -> Response)
}

/// The routes as a tree of path segments; a value, so a handler keeps the one it was made with.
struct RouteTable: Sendable {
    struct Route: Sendable {
        var method: HTTPMethod
        /// The names of the path's parameters, in order (`*` and `**` by those names).
        var parameterNames: [String]
        var endpoint: Endpoint
        /// Takes its body as it arrives (`Router.on(_:method:streamingBody:use:)`).
        var streamsBody = false
    }

    struct Node: Sendable {
        var literals: [(segment: [UInt8], child: Int)] = []
        /// `:name` (and `*`): any one segment.
        var parameter: Int? = nil
        var wildcard: Int? = nil
        /// `**`: the rest of the path.
        var catchAll: Int? = nil
        /// Indices into `routes` of the routes that end here.
        var routes: [Int] = []
        /// The `Allow` value of a 405 here.
        var allow = ""
    }

    var nodes = [Node()]
    var routes: [Route] = []

    mutating func add(path: String, method: HTTPMethod, endpoint: Endpoint, streamsBody: Bool = false) {
        precondition(method != .other && method != .CONNECT, "routes take the methods HTTPMethod names")
        var node = 0
        var names: [String] = []
        let segments = path.split(separator: "/")
        for (i, segment) in segments.enumerated() {
            if segment == "**" {
                precondition(i == segments.count - 1, "** must be a route's last segment: \(path)")
                names.append("**")
                node = child(of: node, \.catchAll)
            } else if segment == "*" {
                names.append("*")
                node = child(of: node, \.wildcard)
            } else if segment.hasPrefix(":") || (segment.hasPrefix("{") && segment.hasSuffix("}")) {
                let name = segment.hasPrefix(":") ? segment.dropFirst() : segment.dropFirst().dropLast()
                precondition(!name.isEmpty, "a parameter needs a name: \(path)")
                names.append(String(name))
                node = child(of: node, \.parameter)
            } else {
                let bytes = Array(segment.utf8)
                if let existing = nodes[node].literals.first(where: { $0.segment == bytes }) {
                    node = existing.child
                } else {
                    nodes.append(Node())
                    nodes[node].literals.append((bytes, nodes.count - 1))
                    node = nodes.count - 1
                }
            }
        }
        precondition(!nodes[node].routes.contains { routes[$0].method == method }, "\(method) \(path) is routed twice")
        routes.append(Route(method: method, parameterNames: names, endpoint: endpoint, streamsBody: streamsBody))
        nodes[node].routes.append(routes.count - 1)
        var methods = nodes[node].routes.map { routes[$0].method }
        if methods.contains(.GET) && !methods.contains(.HEAD) { methods.insert(.HEAD, at: methods.firstIndex(of: .GET)! + 1) }
        nodes[node].allow = methods.map(\.description).joined(separator: ", ")
    }

    mutating func child(of node: Int, _ edge: WritableKeyPath<Node, Int?>) -> Int {
        if let existing = nodes[node][keyPath: edge] { return existing }
        nodes.append(Node())
        nodes[node][keyPath: edge] = nodes.count - 1
        return nodes.count - 1
    }

    /// The node `path` ends at, and the spans of what its parameters matched, counted from
    /// `offset` (where the path lies in the request's bytes); nil when no route's path matches.
    func match(_ path: UnsafeRawBufferPointer, offset: Int) -> (node: Int, captures: [ByteSpan])? {
        var captures: [ByteSpan] = []
        guard let node = walk(0, path, from: 0, offset, &captures) else { return nil }
        return (node, captures)
    }

    func walk(_ node: Int, _ path: UnsafeRawBufferPointer, from start: Int, _ offset: Int, _ captures: inout [ByteSpan]) -> Int? {
        var position = start
        while position < path.count && path[position] == UInt8(ascii: "/") { position += 1 }
        let n = nodes[node]
        if position == path.count {
            if !n.routes.isEmpty { return node }
            if let rest = n.catchAll, !nodes[rest].routes.isEmpty {
                captures.append(ByteSpan(start: offset + position, count: 0))
                return rest
            }
            return nil
        }
        var end = position
        while end < path.count && path[end] != UInt8(ascii: "/") { end += 1 }
        let segment = UnsafeRawBufferPointer(rebasing: path[position..<end])
        if !n.literals.isEmpty {
            let escaped = segment.contains(UInt8(ascii: "%"))
            let decoded = escaped ? PercentDecoding.decodedBytes(Array(segment), plusAsSpace: false) : []
            for literal in n.literals where escaped ? literal.segment == decoded : literal.segment.elementsEqual(segment) {
                if let found = walk(literal.child, path, from: end, offset, &captures) { return found }
            }
        }
        for edge in [n.parameter, n.wildcard] {
            guard let child = edge else { continue }
            captures.append(ByteSpan(start: offset + position, count: end - position))
            if let found = walk(child, path, from: end, offset, &captures) { return found }
            captures.removeLast()
        }
        if let rest = n.catchAll, !nodes[rest].routes.isEmpty {
            captures.append(ByteSpan(start: offset + position, count: path.count - position))
            return rest
        }
        return nil
    }

    /// The route at `node` for `method`: `HEAD` falls back to `GET`.
    func route(at node: Int, for method: HTTPMethod) -> Route? {
        let here = nodes[node].routes
        if let i = here.first(where: { routes[$0].method == method }) { return routes[i] }
        if method == .HEAD, let i = here.first(where: { routes[$0].method == .GET }) { return routes[i] }
        return nil
    }
}

/// The handler a `Router` makes (`Router.handler`): routes, middleware, and a fallback for paths
/// no route matches. A synchronous route with no middleware is answered inline, like any
/// `HTTPHandler`; everything else (an async route, or any route once middleware is installed) is
/// answered through `respondLater`, as a task on the worker's loop.
public struct RouterHandler<Fallback: HTTPHandler>: HTTPHandler {
    let table: RouteTable
    let middleware: [any RouterMiddleware]
    public let fallback: Fallback
    let logger: Logger

    /// The routes' methods are any of these; the fallback's are a subset.
    public var allowedMethods: StaticString { "GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH" }

    /// A route that streams its body is asked for it at the head (`HTTPHandler.streamsBody`); the
    /// fallback decides for the paths no route takes.
    public func streamsBody(_ request: HTTPRequest) -> Bool {
        guard let (node, _) = table.match(request.path.buffer, offset: Int(request.head.path.start)) else { return fallback.streamsBody(request) }
        return table.route(at: node, for: request.method)?.streamsBody ?? false
    }

    public func handle(_ request: HTTPRequest, _ response: inout HTTPResponseWriter) {
        guard let (node, spans) = table.match(request.path.buffer, offset: Int(request.head.path.start)) else {
            return fallback.handle(request, &response)
        }
        let route = table.route(at: node, for: request.method)
        let context = RequestContext(logger: logger)
        if middleware.isEmpty {
            guard let route else { return respond(ErrorResponse.methodNotAllowed(allow: table.nodes[node].allow), &response) }
            if case .sync(let body) = route.endpoint {
                let owned = Request(request, parameterNames: route.parameterNames, parameterSpans: spans, resolveClient: false)
                let result: Response
                do { result = try body(owned, context) } catch { result = ErrorResponse.response(for: error, logger: logger) }
                return respond(result, &response)
            }
        }
        let owned = Request(request, parameterNames: route?.parameterNames ?? [], parameterSpans: route == nil ? [] : spans, resolveClient: true)
        let endpoint: Endpoint = route?.endpoint ?? .sync { [allow = table.nodes[node].allow] _, _ in ErrorResponse.methodNotAllowed(allow: allow) }
        let chain = MiddlewareChain(middleware: middleware, endpoint: endpoint)
        let logger = logger
        response.respondLater {
            let result: Response
            do { result = try await chain.run(from: 0, owned, context) } catch { result = ErrorResponse.response(for: error, logger: logger) }
            return ErrorResponse.checked(result, logger: logger)
        }
    }

    func respond(_ result: Response, _ response: inout HTTPResponseWriter) {
        let checked = ErrorResponse.checked(result, logger: logger)
        // A streamed body is written by a task, as the worker runs deferred answers.
        if checked.stream != nil { return response.respondLater { checked } }
        response.respond(checked)
    }
}
