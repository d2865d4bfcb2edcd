// hummingbird-todo: clusterd-todo's API written the way a Hummingbird 2 application writes it, on the
// same TodoCore (JSON and SQL), for `make bench`'s side-by-side comparison.
//
//   hummingbird-todo [--host 127.0.0.1] [--port 8080] [--threads 1] [--pool-size 4]
//
// DATABASE_URL names the database. `--threads` is the number of NIO event loop threads that
// serve HTTP and talk to PostgreSQL (one group, as a Hummingbird app has); `--pool-size` the
// connections at most, per thread, as clusterd-todo's `poolSize` is per worker.
import Hummingbird
import Logging
import NIOPosix
import PostgresNIO
import TodoCore

#if canImport(Glibc)
import Glibc
#endif

func fail(_ message: String) -> Never {
    let line = Array("hummingbird-todo: \(message)\n".utf8)
    _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    exit(64)
}

var host = "127.0.0.1"
var port = 8080
var threads = 1
var poolSize = 4
var arguments = CommandLine.arguments.dropFirst()
while let flag = arguments.popFirst() {
    guard let value = arguments.popFirst() else { fail("\(flag) needs a value") }
    switch flag {
    case "--host": host = value
    case "--port": port = Int(value) ?? -1
    case "--threads": threads = Int(value) ?? -1
    case "--pool-size": poolSize = Int(value) ?? -1
    default: fail("unknown option \(flag)")
    }
}
guard (1...65535).contains(port), (1...256).contains(threads), (1...100).contains(poolSize) else { fail("bad --port, --threads or --pool-size") }
guard let urlText = getenv("DATABASE_URL").map({ String(cString: $0) }) else { fail("set DATABASE_URL (postgres://user@host:port/db)") }
let database: DatabaseURL
do { database = try DatabaseURL(urlText) } catch { fail("DATABASE_URL: \(error)") }

var logger = Logger(label: "hummingbird-todo")
logger.logLevel = .warning
let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
let client = PostgresClient(configuration: database.clientConfiguration(poolSize: poolSize * threads), eventLoopGroup: group, backgroundLogger: logger)
let store = TodoStore(client: client, logger: logger)

/// The routes, as a Hummingbird app writes them: closures on a `Router`, one per method and path.
enum TodoRoutes {
    static func json(_ status: HTTPResponse.Status, _ body: [UInt8]) -> Response {
        Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }
    static func error(_ status: HTTPResponse.Status, _ message: String) -> Response { json(status, TodoJSON.error(message)) }
    static var notFound: Response { error(.notFound, "no such todo") }

    /// Runs a database call; an error is a 503, as in clusterd-todo.
    static func answer(_ store: TodoStore, _ work: () async throws -> Response) async -> Response {
        do { return try await work() } catch {
            store.logger.error("database: \(String(reflecting: error))")
            return json(.serviceUnavailable, TodoJSON.error("database unavailable"))
        }
    }

    static func body(_ request: Request) async throws -> [UInt8] {
        Array(try await request.body.collect(upTo: 1 << 20).readableBytesView)
    }

    static func router(_ store: TodoStore) -> Router<BasicRequestContext> {
        let router = Router()
        router.get("/todos") { _, _ in
            await answer(store) { json(.ok, TodoJSON.encode(try await store.list())) }
        }
        router.post("/todos") { request, _ in
            let title: String
            do { title = try TodoJSON.decodeNew(try await body(request)) } catch let e as BadRequest { return error(.badRequest, e.message) }
            return await answer(store) {
                let todo = try await store.create(title: title)
                var response = json(.created, TodoJSON.encode(todo))
                response.headers[.location] = "/todos/\(todo.id)"
                return response
            }
        }
        router.get("/todos/:id") { _, context in
            guard let id = context.parameters.get("id").flatMap(TodoJSON.id) else { return notFound }
            return await answer(store) { try await store.find(id: id).map { json(.ok, TodoJSON.encode($0)) } ?? notFound }
        }
        router.patch("/todos/:id") { request, context in
            guard let id = context.parameters.get("id").flatMap(TodoJSON.id) else { return notFound }
            let change: (title: String?, done: Bool?)
            do { change = try TodoJSON.decodePatch(try await body(request)) } catch let e as BadRequest { return error(.badRequest, e.message) }
            return await answer(store) {
                try await store.update(id: id, title: change.title, done: change.done).map { json(.ok, TodoJSON.encode($0)) } ?? notFound
            }
        }
        router.delete("/todos/:id") { _, context in
            guard let id = context.parameters.get("id").flatMap(TodoJSON.id) else { return notFound }
            return await answer(store) { try await store.delete(id: id) ? Response(status: .noContent) : notFound }
        }
        return router
    }
}

let app = Application(
    router: TodoRoutes.router(store),
    configuration: .init(address: .hostname(host, port: port), serverName: "hummingbird-todo"),
    services: [client],
    eventLoopGroupProvider: .shared(group),
    logger: logger
)
do { try await app.runService() } catch { fail("\(error)") }
