import ClusterApp
import ClusterTesting
import Testing

/// Answers every path no route matches, so tests can tell the fallback ran.
struct Fallback: HTTPHandler {
    func handle(_ request: HTTPRequest, _ response: inout HTTPResponseWriter) {
        response.respond(status: 404, body: "fallback \(request.path.string)")
    }
}

func client(_ router: Router, clientAddress: String? = nil) -> TestClient<RouterHandler<Fallback>> {
    TestClient(handler: router.handler(fallback: Fallback()), clientAddress: clientAddress)
}

@Suite struct RouteMatching {
    let router: Router = {
        let router = Router()
        router.get("/") { _, _ in "root" }
        router.get("/todos") { _, _ in "list" }
        router.get("/todos/new") { _, _ in "literal" }
        router.get("/todos/:id") { request, _ in "todo \(request.parameters["id"] ?? "?")" }
        router.get("/todos/:id/tags/:tag") { request, _ in "\(request.parameters["id"]!)/\(request.parameters["tag"]!)" }
        router.get("/files/**") { request, _ in "file \(request.parameters.catchAll ?? "?")" }
        router.get("/any/*/end") { _, _ in "wildcard" }
        router.get("/users/{name}") { request, _ in "user \(request.parameters["name"]!)" }
        return router
    }()

    @Test func literalsParametersAndWildcards() async {
        let c = client(router)
        #expect(await c.get("/").text == "root")
        #expect(await c.get("/todos").text == "list")
        #expect(await c.get("/todos/").text == "list", "a trailing slash is the same path")
        #expect(await c.get("/todos/new").text == "literal", "a literal beats a parameter")
        #expect(await c.get("/todos/42").text == "todo 42")
        #expect(await c.get("/todos/42/tags/red").text == "42/red")
        #expect(await c.get("/files/a/b/c.txt").text == "file a/b/c.txt")
        #expect(await c.get("/any/thing/end").text == "wildcard")
        #expect(await c.get("/users/ada").text == "user ada")
    }

    @Test func parametersArePercentDecodedAfterSplitting() async {
        let c = client(router)
        #expect(await c.get("/todos/Ada%20L").text == "todo Ada L")
        #expect(await c.get("/todos/a%2Fb").text == "todo a/b", "an encoded slash stays inside its segment")
        #expect(await c.get("/todos/a+b").text == "todo a+b", "+ is a plus in a path")
        #expect(await c.get("/todos/%zz%4").text == "todo %zz%4", "a malformed escape is kept")
        #expect(await c.get("/todos/%6Eew").text == "literal", "an escaped literal segment matches its literal")
    }

    @Test func unmatchedPathsGoToTheFallback() async {
        let c = client(router)
        let response = await c.get("/nothing/here")
        #expect(response.status == 404)
        #expect(response.text == "fallback /nothing/here")
        #expect(await c.get("/todos/1/tags").text == "fallback /todos/1/tags")
        #expect(await c.get("/any/thing").text == "fallback /any/thing")
    }

    @Test func methodNotAllowedListsTheMethods() async {
        let router = Router()
        router.get("/items") { _, _ in "get" }
        router.post("/items") { _, _ in "post" }
        let response = await client(router).execute("DELETE", "/items")
        #expect(response.status == 405)
        #expect(response.header("Allow") == "GET, HEAD, POST")
        #expect(response.header("Content-Type") == "application/json")
        #expect(response.text == #"{"error":"method not allowed"}"#)
    }

    @Test func headIsAnsweredByGetWithoutBody() async {
        let router = Router()
        router.get("/page") { _, _ in "twelve bytes" }
        router.get("/both") { _, _ in "from get" }
        router.head("/both") { _, _ in Response(status: 200, headers: [HTTPField("X-Head", "1")]) }
        let c = client(router)
        let head = await c.head("/page")
        #expect(head.status == 200)
        #expect(head.header("Content-Length") == "12")
        #expect(head.body.isEmpty)
        #expect(head.raw.count == (await c.get("/page")).raw.count - 12, "the same head, no body")
        #expect(await c.head("/both").header("X-Head") == "1", "a HEAD route wins over GET")
    }

    @Test func headOfAnAsyncRouteHasNoBodyEither() async {
        let router = Router()
        router.add(middleware: RequestIDMiddleware())
        router.get("/later") { _, _ in
            await Task.yield()
            return "twelve bytes"
        }
        let head = await client(router).head("/later")
        #expect(head.status == 200)
        #expect(head.header("Content-Length") == "12")
        #expect(head.header("X-Request-ID") != nil)
        #expect(head.raw.count == (await client(router).get("/later")).raw.count - 12)
    }

    @Test func stockEndpointsStayUnlessRouted() async throws {
        let router = Router()
        router.get("/api") { _, _ in "api" }
        router.get("/readyz") { _, _ in "mine" }
        let handler = try router.handler(context: HandlerContext(config: ClusterConfiguration()))
        let c = TestClient(handler: handler)
        let health = await c.get("/healthz")
        #expect(health.status == 200)
        #expect(health.text == "ok\n")
        #expect(await c.get("/readyz").text == "mine", "the app overrides a stock path by routing it")
        #expect(await c.get("/api").text == "api")
        #expect(await c.get("/missing").status == 404)
    }

    @Test func syncRoutesAnswerInlineAndAsyncOnesDefer() {
        let router = Router()
        router.get("/sync") { _, _ in "now" }
        router.get("/async") { _, _ in
            await Task.yield()
            return "later"
        }
        let handler = router.handler(fallback: Fallback())
        func outcome(_ path: String) -> HTTPConnectionState.Outcome {
            var state = HTTPConnectionState()
            var counters = HTTPCounters()
            let input = IOBuffer(), output = IOBuffer()
            input.write(Array("GET \(path) HTTP/1.1\r\nHost: t\r\n\r\n".utf8))
            let date = Array("Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n".utf8)
            return date.withUnsafeBytes {
                state.process(input, output: output, parser: HTTPParser(limits: HTTPLimits()), context: ResponseContext(dateLine: $0),
                              handler: handler, counters: &counters)
            }
        }
        #expect(outcome("/sync") == .needInput, "no task for a sync route")
        #expect(outcome("/async") == .suspended)
    }

    @Test func asyncRoutesAwait() async {
        let router = Router()
        router.get("/slow/:ms") { request, _ in
            let ms = try request.parameters.require("ms", as: Int.self)
            try await Task.sleep(for: .milliseconds(ms))
            return "slept \(ms)"
        }
        let c = client(router)
        #expect(await c.get("/slow/5").text == "slept 5")
        let bad = await c.get("/slow/abc")
        #expect(bad.status == 400)
        #expect(bad.text == #"{"error":"parameter 'ms' is not a valid Int"}"#)
    }
}

@Suite struct RequestReading {
    @Test func queryIsDecodedAsForms() async {
        let router = Router()
        router.get("/q") { request, _ in
            let q = request.query
            return [
                q["name"] ?? "-", q["plus"] ?? "-", q["bad"] ?? "-", q["flag"] ?? "-", q.all("tag").joined(separator: ","),
                q["name2"] ?? "-", q["missing"] ?? "nil", q["utf8"] ?? "-", q["broken"] ?? "-",
            ].joined(separator: "|")
        }
        let response = await client(router).get("/q?name=Ada%20L&plus=a+b%2Bc&bad=%zz%4&flag&tag=1&tag=2&na%6De2=enc&utf8=caf%C3%A9&broken=%FF")
        #expect(response.text == "Ada L|a b+c|%zz%4||1,2|enc|nil|café|\u{FFFD}")
    }

    @Test func queryConversions() async {
        let router = Router()
        router.get("/page") { request, _ in "\(try request.query.get("n", as: Int.self) ?? -1)" }
        let c = client(router)
        #expect(await c.get("/page?n=3").text == "3")
        #expect(await c.get("/page").text == "-1")
        #expect(await c.get("/page?n=x").status == 400)
    }

    @Test func headersAndRequestFacts() async {
        let router = Router()
        router.post("/echo/:id") { request, _ in
            [request.methodName, request.path, request.target, request.headers["X-CUSTOM"] ?? "-", request.headers.values("x-multi").joined(separator: ","),
             String(decoding: request.body, as: UTF8.self), request.clientAddress?.description ?? "none"].joined(separator: "|")
        }
        let response = await client(router, clientAddress: "203.0.113.7").execute(
            "POST", "/echo/1?a=b", headers: [("x-custom", "v"), ("X-Multi", "1"), ("x-multi", "2")], body: Array("payload".utf8))
        #expect(response.text == "POST|/echo/1|/echo/1?a=b|v|1,2|payload|203.0.113.7")
        let anonymous = await client(router).execute("POST", "/echo/1", body: [])
        #expect(anonymous.text.hasSuffix("|none"))
    }

    @Test func chunkedBodiesArriveWhole() async {
        let router = Router()
        router.post("/up") { request, _ in request.body }
        let raw = "POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        let response = await client(router).send(Array(raw.utf8))
        #expect(response.text == "abcde")
        #expect(response.header("Content-Type") == "application/octet-stream")
    }

    @Test func malformedRequestsNeverReachRoutes() async {
        let router = Router()
        router.get("/") { _, _ in "root" }
        let response = await client(router).send(Array("GET / HTTP/1.1\r\n\r\n".utf8))
        #expect(response.status == 400, "no Host")
    }
}

struct Todo: Codable, Equatable, ResponseEncodable {
    var id: Int
    var title: String
    var done: Bool
}

struct NewTodo: Codable {
    var title: String
    var done: Bool?
}

@Suite struct JSONAndErrors {
    let router: Router = {
        let router = Router()
        router.post("/todos") { request, _ in
            let new = try request.decode(NewTodo.self)
            return try Response.json(Todo(id: 1, title: new.title, done: new.done ?? false), status: 201)
        }
        router.get("/todos/:id") { request, _ in
            let id = try request.parameters.require("id", as: Int.self)
            guard id == 1 else { throw HTTPError(404, "todo \(id) not found") }
            return Todo(id: 1, title: "write tests", done: false)
        }
        router.get("/list") { _, _ in [Todo(id: 1, title: "a", done: true)] }
        router.get("/map") { _, _ in ["k": 1] }
        router.get("/bytes") { _, _ in [UInt8]([0, 1, 2]) }
        router.get("/nothing") { _, _ -> String? in nil }
        router.get("/crash") { _, _ -> String in throw SecretError(password: "hunter2") }
        router.get("/inject") { _, _ in Response(status: 200, headers: [HTTPField("X-Bad", "a\r\nSet-Cookie: evil=1")], body: []) }
        router.get("/framing") { _, _ in Response(status: 200, headers: [HTTPField("Content-Length", "999")], body: Array("ok".utf8)) }
        return router
    }()

    struct SecretError: Error { var password: String }

    @Test func jsonInAndOut() async throws {
        let c = client(router)
        let created = try await c.execute("POST", "/todos", json: NewTodo(title: "buy milk", done: nil))
        #expect(created.status == 201)
        #expect(created.header("Content-Type") == "application/json")
        #expect(try created.json(as: Todo.self) == Todo(id: 1, title: "buy milk", done: false))
        #expect(try await c.get("/todos/1").json(as: Todo.self) == Todo(id: 1, title: "write tests", done: false))
        #expect(try await c.get("/list").json(as: [Todo].self) == [Todo(id: 1, title: "a", done: true)])
        #expect(await c.get("/map").text == #"{"k":1}"#)
    }

    @Test func otherResponseTypes() async {
        let c = client(router)
        let bytes = await c.get("/bytes")
        #expect(bytes.body == [0, 1, 2])
        #expect(bytes.header("Content-Type") == "application/octet-stream")
        let nothing = await c.get("/nothing")
        #expect(nothing.status == 204)
        #expect(nothing.header("Content-Length") == nil)
        let text = await client(RouteMatching().router).get("/")
        #expect(text.header("Content-Type") == "text/plain; charset=utf-8")
    }

    @Test func undecodableBodiesAre400WithAReason() async {
        let c = client(router)
        func post(_ body: String) async -> TestResponse {
            await c.execute("POST", "/todos", headers: [("Content-Type", "application/json")], body: Array(body.utf8))
        }
        let notJSON = await post("{nope")
        #expect(notJSON.status == 400)
        #expect(notJSON.text == #"{"error":"invalid JSON body: not valid JSON"}"#)
        #expect(await post("{}").text == #"{"error":"invalid JSON body: missing key 'title'"}"#)
        #expect(await post(#"{"title": 3}"#).text == #"{"error":"invalid JSON body: 'title' must be a string"}"#)
        #expect(await post(#"{"title": "x", "done": "yes"}"#).text == #"{"error":"invalid JSON body: 'done' must be a boolean"}"#)
    }

    @Test func thrownErrorsBecomeResponses() async {
        let c = client(router)
        let missing = await c.get("/todos/7")
        #expect(missing.status == 404)
        #expect(missing.text == #"{"error":"todo 7 not found"}"#)
        let crash = await c.get("/crash")
        #expect(crash.status == 500)
        #expect(crash.text == #"{"error":"internal server error"}"#)
        #expect(!crash.text.contains("hunter2"))
    }

    @Test func headerInjectionIsRefused() async {
        let c = client(router)
        let injected = await c.get("/inject")
        #expect(injected.status == 500)
        #expect(injected.header("Set-Cookie") == nil)
        let framing = await c.get("/framing")
        #expect(framing.text == "ok", "the engine frames the body; a route's Content-Length is dropped")
        #expect(framing.headers(named: "Content-Length") == ["2"])
    }
}

@Suite struct QueryCorners {
    @Test func semicolonsAndEmptyPairs() async {
        let router = Router()
        router.get("/q") { request, _ in request.query.map { "\($0.name)=\($0.value)" }.joined(separator: "|") }
        let c = client(router)
        #expect(await c.get("/q?a=1;b=2&&c&=v&d==x").text == "a=1;b=2|c=|=v|d==x", "only & separates; = after the first is the value's")
        #expect(await c.get("/q").text == "")
        #expect(await c.get("/q?%").text == "%=")
    }
}
