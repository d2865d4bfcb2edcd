// clusterd-todo: a JSON API on PostgreSQL, served by clusterd (master, workers, reload, scale).
//
//   POST   /todos      {"title": "milk"}     → 201 {"done":false,"id":1,"title":"milk"}
//   GET    /todos                            → 200 [{...}, ...]
//   GET    /todos/:id                        → 200 {...} | 404 {"error": ...}
//   PATCH  /todos/:id  {"done": true}        → 200 {...} (and/or "title")
//   DELETE /todos/:id                        → 204 | 404
//   anything else → the stock handler (the config's routes and static files, /healthz, /metrics)
//
// The database: the config's `"app": {"databaseURL": "postgres://...", "poolSize": 4}`, or the
// DATABASE_URL environment variable when the config names none. Each worker opens its own pool
// (`poolSize` connections at most) on one NIO event loop thread of its own; the master only
// validates the settings and never connects. Queries are awaited in `respondLater` tasks, which run
// on the worker's loop: a worker serves its other connections while a query is out.
import Cluster
import ClusterConfig
import ClusterHTTP
import ClusterJSON
import Logging
import NIOPosix
import PostgresNIO
import TodoCore

#if canImport(Glibc)
import Glibc
#endif

struct TodoAPI: HTTPHandler {
    /// Nil in the master's validation run (no worker serves that handler).
    let store: TodoStore?
    let fallback: StockHandler

    func handle(_ request: HTTPRequest, _ response: inout HTTPResponseWriter) {
        // A small match on the path: `/todos` and `/todos/<id>`; the rest is the stock handler's.
        let path = request.path.string
        if path == "/todos" { return collection(request, &response) }
        guard path.hasPrefix("/todos/"), !path.dropFirst("/todos/".count).contains("/") else {
            return fallback.handle(request, &response)
        }
        item(id: TodoJSON.id(path.dropFirst("/todos/".count)), request, &response)
    }

    /// `/todos`: list (GET, HEAD) and create (POST).
    func collection(_ request: HTTPRequest, _ response: inout HTTPResponseWriter) {
        switch request.method {
        case .GET, .HEAD:
            answerLater(&response) { store in .json(200, TodoJSON.encode(try await store.list())) }
        case .POST:
            let title: String
            do { title = try TodoJSON.decodeNew(request.body.array) } catch { return respond(&response, .error(400, error.message)) }
            answerLater(&response) { store in
                let todo = try await store.create(title: title)
                return .json(201, TodoJSON.encode(todo), headers: [HTTPField("Location", "/todos/\(todo.id)")])
            }
        default:
            respond(&response, .error(405, "method not allowed", headers: [HTTPField("Allow", "GET, HEAD, POST")]))
        }
    }

    /// `/todos/:id`: read (GET, HEAD), change (PATCH), delete (DELETE).
    func item(id: Int64?, _ request: HTTPRequest, _ response: inout HTTPResponseWriter) {
        let allow = "GET, HEAD, PATCH, DELETE"
        switch request.method {
        case .GET, .HEAD, .PATCH, .DELETE: break
        default: return respond(&response, .error(405, "method not allowed", headers: [HTTPField("Allow", allow)]))
        }
        guard let id else { return respond(&response, .notFound) }
        switch request.method {
        case .PATCH:
            let change: (title: String?, done: Bool?)
            do { change = try TodoJSON.decodePatch(request.body.array) } catch { return respond(&response, .error(400, error.message)) }
            answerLater(&response) { store in
                guard let todo = try await store.update(id: id, title: change.title, done: change.done) else { return .notFound }
                return .json(200, TodoJSON.encode(todo))
            }
        case .DELETE:
            answerLater(&response) { store in
                try await store.delete(id: id) ? HTTPResponse(status: 204, contentType: nil) : .notFound
            }
        default:
            answerLater(&response) { store in
                guard let todo = try await store.find(id: id) else { return .notFound }
                return .json(200, TodoJSON.encode(todo))
            }
        }
    }

    /// Runs `work` as the worker's task; a database error is a 503 (logged), not a dropped connection.
    func answerLater(_ response: inout HTTPResponseWriter, _ work: @escaping @Sendable (TodoStore) async throws -> HTTPResponse) {
        guard let store else { return respond(&response, .error(503, "no database in this process")) }
        response.respondLater {
            do {
                return try await work(store)
            } catch {
                store.logger.error("database: \(String(reflecting: error))")
                return .error(503, "database unavailable")
            }
        }
    }

    func respond(_ response: inout HTTPResponseWriter, _ answer: HTTPResponse) {
        response.respond(answer)
    }
}

extension HTTPResponse {
    static func json(_ status: Int, _ body: [UInt8], headers: [HTTPField] = []) -> HTTPResponse {
        HTTPResponse(status: status, contentType: "application/json", headers: headers, body: body)
    }
    static func error(_ status: Int, _ message: String, headers: [HTTPField] = []) -> HTTPResponse {
        .json(status, TodoJSON.error(message), headers: headers)
    }
    static let notFound = HTTPResponse.error(404, "no such todo")
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
    let fallback = try StockHandler(context: context)
    // The master runs the factory only to validate a config: no connections there.
    guard context.lifecycle != nil else { return TodoAPI(store: nil, fallback: fallback) }
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
    return TodoAPI(store: TodoStore(client: client, logger: logger), fallback: fallback)
}
