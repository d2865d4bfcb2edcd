import ClusterApp
import ClusterTesting
import Testing

// The app of Docs/library.md ("An application"), as written there, against an in-memory store:
// if the guide's code stops compiling or behaving, this fails.
actor TodoStore {
    var todos: [Int: GuideTodo] = [1: GuideTodo(id: 1, title: "write tests", done: false)]
    func todo(_ id: Int) -> GuideTodo? { todos[id] }
    func add(_ title: String) -> GuideTodo {
        let todo = GuideTodo(id: todos.count + 1, title: title, done: false)
        todos[todo.id] = todo
        return todo
    }
}

struct GuideTodo: Codable, ResponseEncodable {
    var id: Int
    var title: String
    var done: Bool
}
struct NewGuideTodo: Codable { var title: String }

func guideRouter(store: TodoStore) -> Router {
    let router = Router()
    router.add(middleware: RequestIDMiddleware())
    router.add(middleware: CORSMiddleware(allowOrigin: .origins(["https://app.example.com"])))
    router.get("/todos/:id") { request, context in
        let id = try request.parameters.require("id", as: Int.self)
        guard let todo = await store.todo(id) else { throw HTTPError(404, "todo \(id) not found") }
        return todo
    }
    router.post("/todos") { request, context in
        let new = try request.decode(NewGuideTodo.self)
        return try Response.json(await store.add(new.title), status: 201)
    }
    router.get("/hello") { request, _ in
        "Hello, \(request.query["name"] ?? "world")\n"
    }
    return router
}

@Suite struct GuideExample {
    @Test func theGuidesAppWorks() async throws {
        let router = guideRouter(store: TodoStore())
        let client = TestClient(handler: try router.handler(context: HandlerContext(config: ClusterConfiguration())))
        let response = await client.get("/todos/1", headers: [("Accept", "application/json")])
        #expect(response.status == 200)
        #expect(try response.json(as: GuideTodo.self).title == "write tests")
        #expect(response.header("X-Request-ID") != nil)
        let created = try await client.execute("POST", "/todos", json: NewGuideTodo(title: "ship it"))
        #expect(created.status == 201)
        #expect(try created.json(as: GuideTodo.self).id == 2)
        #expect(await client.get("/todos/9").text == #"{"error":"todo 9 not found"}"#)
        #expect(await client.get("/hello?name=Ada+L").text == "Hello, Ada L\n")
        #expect(await client.get("/healthz").text == "ok\n")
    }
}

/// The first section of Docs/library.md ("From `swift package init` to a deployed service"), as
/// written there: its routes, and the stock endpoints and HEAD it promises stay.
struct Greeting: Codable, ResponseEncodable { var hello: String }

@Suite struct PackageInitGuide {
    @Test func theQuickStartAppAnswersAsDocumented() async throws {
        let router = Router()
        router.get("/hello/:name") { request, _ in Greeting(hello: request.parameters["name"] ?? "world") }
        router.get("/slow") { _, _ in
            try await Task.sleep(for: .milliseconds(100))
            return "done\n"
        }
        let client = TestClient(handler: try router.handler(context: HandlerContext(config: ClusterConfiguration())))
        #expect(try await client.get("/hello/Ada").json(as: Greeting.self).hello == "Ada")
        #expect(await client.get("/slow").text == "done\n")
        let head = await client.head("/hello/Ada")
        #expect(head.status == 200 && head.body.isEmpty)
        #expect(await client.get("/healthz").text == "ok\n")
        #expect(await client.get("/readyz").text == "ready\n")
        #expect(await client.get("/nothing").status == 404)
    }
}
