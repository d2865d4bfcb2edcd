import ClusterConfig
import ClusterControl
import ClusterHTTP
import ClusterSystem
import ClusterWorker

/// The stock application of `clusterd`: the config's fixed routes, `/healthz`, and 404/405 for
/// everything else. Every response is rendered once, when the config is loaded; serving one is a
/// path comparison and a few memcpys.
public struct StockHandler: HTTPHandler {
    struct Route {
        let path: [UInt8]
        let response: PreparedResponse
    }

    let routes: [Route]
    let staticRoots: [StaticFiles]
    let metricsPath: [UInt8]?
    let metrics: ClusterConfiguration.Metrics?
    /// What `/metrics` renders; without it (nil: not in a worker) the metrics path is not served.
    let stats: StatsSegment?
    let forbidden = PreparedResponse(status: 403, body: "forbidden\n")
    let health = PreparedResponse(status: 200, body: "ok\n")
    let draining = PreparedResponse(status: 503, body: "draining\n")
    let ready = PreparedResponse(status: 200, body: "ready\n")
    let notReady = PreparedResponse(status: 503, body: "not ready\n")
    /// Whether the worker is stopping (`/healthz` then says `draining`); nil outside a worker.
    let lifecycle: WorkerLifecycle?
    let notFound = PreparedResponse(status: 404, body: "not found\n")
    let methodNotAllowed = PreparedResponse(status: 405, headers: [HTTPField("Allow", "GET, HEAD")], body: "method not allowed\n")

    /// The handler for a factory's context: its config, and its stats for `/metrics`.
    public init(context: HandlerContext) throws {
        try self.init(config: context.config, stats: context.stats, lifecycle: context.lifecycle)
    }

    /// Throws a `ConfigError` for a config this handler cannot serve (a static root it cannot read).
    public init(config: ClusterConfiguration, stats: StatsSegment? = nil, lifecycle: WorkerLifecycle? = nil) throws {
        self.lifecycle = lifecycle
        for (i, root) in config.staticRoots.enumerated() where !FileIO.isReadableDirectory(root.root) {
            throw ConfigError(file: config.source, keyPath: "static[\(i)].root", message: "\(root.root) is not a readable directory")
        }
        let types = MimeTypes(overrides: config.mimeTypes)
        staticRoots = config.staticRoots.map { StaticFiles($0, types: types) }
        metrics = config.metrics
        self.stats = stats
        metricsPath = config.metrics.map { Array($0.path.utf8) }
        routes = config.routes.map { r in
            Route(
                path: Array(r.path.utf8),
                response: PreparedResponse(status: r.status, contentType: r.contentType, headers: r.headers.map { HTTPField($0.name, $0.value) }, body: r.body))
        }
    }

    /// Routes, health, metrics and static files answer GET and HEAD; OPTIONS * the engine answers.
    public var allowedMethods: StaticString { "GET, HEAD, OPTIONS" }

    public func handle(_ request: HTTPRequest, _ response: inout HTTPResponseWriter) {
        let path = request.path
        if let i = routeIndex(for: path) {
            guard request.method == .GET || request.method == .HEAD else { return response.respond(methodNotAllowed) }
            return response.respond(routes[i].response)
        }
        if path == "/healthz" {
            guard request.method == .GET || request.method == .HEAD else { return response.respond(methodNotAllowed) }
            return response.respond(lifecycle?.isStopping == true ? draining : health)
        }
        if path == "/readyz" {
            // Readiness (Kubernetes' readinessProbe): also "not ready" while the master starts, or a
            // reload or upgrade has no ready worker of the generation that is to serve yet.
            guard request.method == .GET || request.method == .HEAD else { return response.respond(methodNotAllowed) }
            if lifecycle?.isStopping == true { return response.respond(draining) }
            return response.respond(stats.map { $0.master[.ready] == 1 } ?? true ? ready : notReady)
        }
        if let metricsPath, metricsPath.withUnsafeBytes({ path.equals($0) }), let stats {
            // Only for the clients metrics.allow names (nginx's stub_status behind allow/deny): the
            // peer is looked up here, for metrics requests only, not for every connection.
            guard let metrics, request.clientAddress.map(metrics.allows) == true else { return response.respond(forbidden) }
            guard request.method == .GET || request.method == .HEAD else { return response.respond(methodNotAllowed) }
            return response.respond(status: 200, contentType: "text/plain; version=0.0.4; charset=utf-8", body: MetricsRenderer.render(stats))
        }
        // The longest matching prefix serves.
        var best: StaticFiles? = nil
        for root in staticRoots where root.matches(path) && root.prefix.count > (best?.prefix.count ?? -1) { best = root }
        if let best { return best.handle(request, &response) }
        response.respond(notFound)
    }

    /// Index of the route for `path` (by index: no copy of a route per request).
    @inline(__always)
    func routeIndex(for path: HTTPBytes) -> Int? {
        routes.indices.first { routes[$0].path.withUnsafeBytes { path.equals($0) } }
    }
}
