// clusterd-todo: a JSON API on PostgreSQL, served by clusterd (master, workers, reload, scale),
// written with ClusterApp's router.
//
//   POST   /todos      {"title": "milk"}     → 201 {"done":false,"id":1,"title":"milk"}
//   GET    /todos                            → 200 [{...}, ...]
//   GET    /todos/:id                        → 200 {...} | 404 {"error": "no such todo"}
//   PATCH  /todos/:id  {"done": true}        → 200 {...} (and/or "title")
//   DELETE /todos/:id                        → 204 | 404
//   HEAD from GET, 405 with Allow; anything else → the stock handler (/healthz, /metrics, routes)
//
// The database: the config's `"app": {"databaseURL": "postgres://...", "poolSize": 4}`, or the
// DATABASE_URL environment variable when the config names none. Each worker opens its own pool
// (`poolSize` connections at most) on one NIO event loop thread of its own; the master only
// validates the settings and never connects. The routes await their queries: each runs as a task
// on the worker's loop (respondLater), which serves its other connections while a query is out.
import ClusterApp
import ClusterJSON
import Logging
import NIOPosix
import PostgresNIO
import TodoCore

#if canImport(Glibc)
import Glibc
#endif

/// The routes. The JSON in and out is TodoCore's, the same bytes as hummingbird-todo's.
enum TodoRoutes {
    static let notFound = HTTPError(404, "no such todo")

    static func json(_ body: [UInt8], status: Int = 200, headers: [HTTPField] = []) -> Response {
        Response(status: status, headers: [HTTPField("Content-Type", "application/json")] + headers, body: body)
    }

    /// A todo id from the path: 404 (not 400) for one that is not a positive integer, as no such
    /// todo can exist.
    static func id(_ request: Request) throws -> Int64 {
        guard let id = request.parameters["id"].flatMap(TodoJSON.id) else { throw notFound }
        return id
    }

    /// A request body the API refuses: 400 with the reason.
    static func decode<T>(_ decode: () throws(BadRequest) -> T) throws -> T {
        do { return try decode() } catch { throw HTTPError(400, error.message) }
    }

    /// Runs database work; a database error is logged and answered 503, not 500.
    static func database<T>(_ store: TodoStore?, _ context: RequestContext, _ work: (TodoStore) async throws -> T) async throws -> T {
        guard let store else { throw HTTPError(503, "no database in this process") }
        do { return try await work(store) } catch {
            context.logger.error("database: \(String(reflecting: error))")
            throw HTTPError(503, "database unavailable")
        }
    }

    /// `store` is nil in the master's validation run, where no request is ever served.
    static func router(_ store: TodoStore?) -> Router {
        let router = Router()
        router.get("/todos") { _, context in
            json(TodoJSON.encode(try await database(store, context) { try await $0.list() }))
        }
        router.post("/todos") { request, context in
            let title = try decode { () throws(BadRequest) in try TodoJSON.decodeNew(request.body) }
            let todo = try await database(store, context) { try await $0.create(title: title) }
            return json(TodoJSON.encode(todo), status: 201, headers: [HTTPField("Location", "/todos/\(todo.id)")])
        }
        router.get("/todos/:id") { request, context in
            let id = try id(request)
            guard let todo = try await database(store, context, { try await $0.find(id: id) }) else { throw notFound }
            return json(TodoJSON.encode(todo))
        }
        router.patch("/todos/:id") { request, context in
            let id = try id(request)
            let change = try decode { () throws(BadRequest) in try TodoJSON.decodePatch(request.body) }
            guard let todo = try await database(store, context, { try await $0.update(id: id, title: change.title, done: change.done) }) else { throw notFound }
            return json(TodoJSON.encode(todo))
        }
        router.delete("/todos/:id") { request, context in
            let id = try id(request)
            guard try await database(store, context, { try await $0.delete(id: id) }) else { throw notFound }
            return Response(status: 204)
        }
        return router
    }
}

/// The `app` section: `{"databaseURL": "postgres://...", "poolSize": 4}`; both optional.
struct TodoSettings {
    var database: DatabaseURL
    var poolSize: Int

    init(app: JSON?, environment: String?, file: String) throws {
        func refuse(_ key: String, _ message: String) -> ConfigError {
            ConfigError(file: file, keyPath: "app.\(key)", message: message)
        }
        if let app, app.objectValue == nil { throw ConfigError(file: file, keyPath: "app", message: "must be an object") }
        let urlText: String
        if let value = app?["databaseURL"] {
            guard let text = value.stringValue else { throw refuse("databaseURL", "must be a string (postgres://user@host:port/db)") }
            urlText = text
        } else if let environment, !environment.isEmpty {
            urlText = environment
        } else {
            throw refuse("databaseURL", "no database: set app.databaseURL or DATABASE_URL (postgres://user@host:port/db)")
        }
        do { database = try DatabaseURL(urlText) } catch { throw refuse("databaseURL", error.description) }
        poolSize = 4
        if let value = app?["poolSize"] {
            guard let n = value.intValue, (1...100).contains(n) else { throw refuse("poolSize", "must be an integer in 1...100") }
            poolSize = n
        }
    }
}

// An application sets up its own logging, as any swift-log program does; clusterd's loggers are its own.
LoggingSystem.bootstrap(StreamLogHandler.standardError)

Cluster.main(app: AppInfo(name: "clusterd-todo", version: "1.0.0")) { context in
    let environment = getenv("DATABASE_URL").map { String(cString: $0) }
    let settings = try TodoSettings(app: context.app, environment: environment, file: context.config.source)
    // The master runs the factory only to validate a config: no connections there.
    guard context.lifecycle != nil else { return try TodoRoutes.router(nil).handler(context: context) }
    // One event loop thread for this worker's connections to PostgreSQL (not one per core: there
    // are as many workers as cores already). The pool connects lazily, on the first query.
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    var logger = Logger(label: "clusterd-todo.db")
    logger.logLevel = .warning
    let client = PostgresClient(configuration: settings.database.clientConfiguration(poolSize: settings.poolSize), eventLoopGroup: group, backgroundLogger: logger)
    // Detached: this closure is main-actor code (top-level code of main.swift), and a worker's main
    // thread is its epoll loop, which never drains the main actor's queue: a plain `Task { }` here
    // would never start.
    Task.detached { await client.run() }
    return try TodoRoutes.router(TodoStore(client: client, logger: logger)).handler(context: context)
}
