import ClusterApp
import ClusterTesting
import FoundationEssentials
import Testing

/// Writes its name into `X-Trace` on the way in (as a request header the route sees) and adds it
/// to the response's on the way out.
struct Tracer: RouterMiddleware {
    let name: String
    func handle(_ request: Request, context: RequestContext, next: (Request, RequestContext) async throws -> Response) async throws -> Response {
        var context = context
        context.values["trace"] = (context.values["trace"] as? String ?? "") + ">" + name
        var response = try await next(request, context)
        response.addHeader("X-Trace", name)
        return response
    }
}

struct Deny: RouterMiddleware {
    func handle(_ request: Request, context: RequestContext, next: (Request, RequestContext) async throws -> Response) async throws -> Response {
        if request.headers["authorization"] == nil { throw HTTPError(401, "who are you?") }
        return try await next(request, context)
    }
}

@Suite struct Middleware {
    @Test func middlewareRunsInOrderAroundRoutes() async {
        let router = Router()
        router.add(middleware: Tracer(name: "outer"))
        router.add(middleware: Tracer(name: "inner"))
        router.get("/sync") { _, context in context.values["trace"] as? String ?? "-" }
        router.get("/async") { _, context in
            await Task.yield()
            return context.values["trace"] as? String ?? "-"
        }
        router.get("/fails") { _, _ -> String in throw HTTPError(409, "conflict") }
        let c = client(router)
        for path in ["/sync", "/async"] {
            let response = await c.get(path)
            #expect(response.text == ">outer>inner")
            #expect(response.headers(named: "X-Trace") == ["inner", "outer"], "the outer one sees the response last")
        }
        let failed = await c.get("/fails")
        #expect(failed.status == 409)
        #expect(failed.headers(named: "X-Trace") == ["inner", "outer"], "a route's error reaches middleware as a response")
        #expect(await c.get("/elsewhere").header("X-Trace") == nil, "the fallback runs without the routes' middleware")
    }

    @Test func middlewareErrorsBecomeResponses() async {
        let router = Router()
        router.add(middleware: Deny())
        router.get("/private") { _, _ in "secret" }
        let c = client(router)
        let denied = await c.get("/private")
        #expect(denied.status == 401)
        #expect(denied.text == #"{"error":"who are you?"}"#)
        #expect(await c.get("/private", headers: [("Authorization", "Bearer x")]).text == "secret")
    }

    @Test func requestIDIsKeptOrMade() async {
        let router = Router()
        router.add(middleware: RequestIDMiddleware())
        router.get("/id") { _, context in context.requestID ?? "-" }
        router.get("/fails") { _, _ -> String in throw HTTPError(404, "no") }
        let c = client(router)
        let given = await c.get("/id", headers: [("X-Request-ID", "abc-123")])
        #expect(given.text == "abc-123")
        #expect(given.header("X-Request-ID") == "abc-123")
        let made = await c.get("/id")
        #expect(made.text.count == 32)
        #expect(made.header("X-Request-ID") == made.text)
        #expect(await c.get("/id").text != made.text)
        let insane = await c.get("/id", headers: [("X-Request-ID", String(repeating: "x", count: 300))])
        #expect(insane.text.count == 32, "an overlong id is replaced")
        #expect(await c.get("/fails").header("X-Request-ID") != nil, "error responses carry the id too")
    }

    @Test func corsPreflightAndSimpleRequests() async {
        let router = Router()
        router.add(middleware: CORSMiddleware(allowOrigin: .origins(["https://app.example"]), allowHeaders: ["Content-Type"], exposeHeaders: ["X-Total"], maxAge: 60))
        router.get("/data") { _, _ in "data" }
        let c = client(router)
        let preflight = await c.execute("OPTIONS", "/data", headers: [("Origin", "https://app.example"), ("Access-Control-Request-Method", "POST")])
        #expect(preflight.status == 204, "answered by the middleware, not 405")
        #expect(preflight.header("Access-Control-Allow-Origin") == "https://app.example")
        #expect(preflight.header("Access-Control-Allow-Methods") == "GET, HEAD, POST, PUT, PATCH, DELETE")
        #expect(preflight.header("Access-Control-Allow-Headers") == "Content-Type")
        #expect(preflight.header("Access-Control-Max-Age") == "60")
        #expect(preflight.header("Vary") == "Origin")

        let simple = await c.get("/data", headers: [("Origin", "https://app.example")])
        #expect(simple.text == "data")
        #expect(simple.header("Access-Control-Allow-Origin") == "https://app.example")
        #expect(simple.header("Access-Control-Expose-Headers") == "X-Total")

        let stranger = await c.get("/data", headers: [("Origin", "https://evil.example")])
        #expect(stranger.text == "data")
        #expect(stranger.header("Access-Control-Allow-Origin") == nil)
        let strangerPreflight = await c.execute("OPTIONS", "/data", headers: [("Origin", "https://evil.example"), ("Access-Control-Request-Method", "GET")])
        #expect(strangerPreflight.header("Access-Control-Allow-Origin") == nil)

        let noOrigin = await c.execute("OPTIONS", "/data")
        #expect(noOrigin.status == 405, "not a preflight: the router's answer")
        #expect(noOrigin.header("Allow") == "GET, HEAD")
    }

    @Test func corsForAnyOrigin() async {
        let router = Router()
        router.add(middleware: CORSMiddleware())
        router.get("/data") { _, _ in "data" }
        #expect(await client(router).get("/data", headers: [("Origin", "https://x.example")]).header("Access-Control-Allow-Origin") == "*")
        let credentials = Router()
        credentials.add(middleware: CORSMiddleware(allowCredentials: true))
        credentials.get("/data") { _, _ in "data" }
        let response = await client(credentials).get("/data", headers: [("Origin", "https://x.example")])
        #expect(response.header("Access-Control-Allow-Origin") == "https://x.example", "never * with credentials")
        #expect(response.header("Access-Control-Allow-Credentials") == "true")
    }
}

@Suite struct CookieHandling {
    @Test func cookiesAreParsed() async {
        let router = Router()
        router.get("/c") { request, _ in
            let cookies = request.cookies
            return "\(cookies["session"] ?? "-")|\(cookies["quoted"] ?? "-")|\(cookies["missing"] ?? "nil")|\(cookies.map(\.name).joined(separator: ","))"
        }
        let response = await client(router).get("/c", headers: [("Cookie", "session=abc123; quoted=\"q v\";junk; theme=dark"), ("Cookie", "late=1")])
        #expect(response.text == "abc123|q v|nil|session,quoted,theme,late")
    }

    @Test func setCookieWritesAttributes() async throws {
        let full = Cookie(name: "session", value: "abc", path: "/", domain: "example.com", maxAge: 3600,
                          expires: Date(timeIntervalSince1970: 784_111_777), secure: true, httpOnly: true, sameSite: .strict)
        #expect(try full.headerValue() == "session=abc; Path=/; Domain=example.com; Max-Age=3600; Expires=Sun, 06 Nov 1994 08:49:37 GMT; Secure; HttpOnly; SameSite=Strict")
        #expect(try Cookie.expired("session", path: "/").headerValue() == "session=; Path=/; Max-Age=0")

        let router = Router()
        router.post("/login") { _, _ in
            var response = Response(status: 204)
            try response.setCookie(Cookie(name: "a", value: "1", httpOnly: true))
            try response.setCookie(Cookie(name: "b", value: "\"2\"", sameSite: .lax))
            return response
        }
        let response = await client(router).execute("POST", "/login", body: [])
        #expect(response.headers(named: "Set-Cookie") == ["a=1; HttpOnly", "b=\"2\"; SameSite=Lax"])
    }

    @Test(arguments: [
        Cookie(name: "bad name", value: "v"),
        Cookie(name: "", value: "v"),
        Cookie(name: "n", value: "a;b"),
        Cookie(name: "n", value: "a\r\nSet-Cookie: x=1"),
        Cookie(name: "n", value: "a b"),
        Cookie(name: "n", value: "v", path: "/;Domain=evil"),
        Cookie(name: "n", value: "v", path: "/\r\n"),
        Cookie(name: "n", value: "v", domain: "evil.com; Secure"),
        Cookie(name: "n", value: "v", sameSite: SameSite.none),
    ])
    func invalidCookiesAreRefused(_ cookie: Cookie) async {
        #expect(throws: HTTPError.self) { try cookie.headerValue() }
        let router = Router()
        router.get("/set") { _, _ in
            var response = Response(body: "never")
            try response.setCookie(cookie)
            return response
        }
        let response = await client(router).get("/set")
        #expect(response.status == 500)
        #expect(response.header("Set-Cookie") == nil)
    }
}

typealias SameSite = Cookie.SameSite
