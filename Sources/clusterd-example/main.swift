// An example of clusterd as a library: a small JSON API in front of the stock handler. Build it with
// `swift build --product clusterd-example`, run it with the same config and clusterctl as clusterd.
//
//   GET  /api/hello?name=Ada   → {"hello":"Ada"} (the key is the config's "app": {"greeting": ...})
//   GET  /api/hello-async?name=Ada → the same, answered from a task (`respondLater`)
//   POST /api/echo             → the request body, byte for byte
//   POST /api/sum  {"numbers":[1,2,3]} → {"count":3,"sum":6}
//   GET  /api/sleep?ms=200     → {"slept":200} after 200 ms, awaited without blocking the worker
//   GET  /api/count?n=3&ms=100 → "1\n2\n3\n", streamed (chunked), one line every 100 ms
//   anything else              → the stock handler (config routes, /healthz, 404)
import Cluster
import ClusterConfig
import ClusterHTTP
import ClusterJSON
import Logging

struct ExampleAPI: HTTPHandler {
    let fallback: StockHandler
    /// The config's `app.greeting` (default "hello").
    let greeting: String
    let notJSON = PreparedResponse(status: 400, contentType: "application/json", body: #"{"error":"body must be {\"numbers\":[...]}"}"#)

    /// The API's GET and POST, and what the stock app answers.
    var allowedMethods: StaticString { "GET, HEAD, POST, OPTIONS" }

    func handle(_ request: HTTPRequest, _ response: inout HTTPResponseWriter) {
        switch (request.method, request.path) {
        case (.GET, "/api/hello"), (.GET, "/api/hello-async"):
            // Allocating here is fine: this is the user's code, not the server's hot path.
            let name = request.query.string.split(separator: "&").first { $0.hasPrefix("name=") }.map { String($0.dropFirst(5)) } ?? "world"
            let body = JSON.object([greeting: .string(name)]).serialized
            if request.path == "/api/hello" {
                response.respond(status: 200, contentType: "application/json", body: body)
            } else {
                // The same answer through the async path (a task on the worker's loop), for
                // measuring what that path costs against the one above.
                response.respondLater { HTTPResponse(status: 200, contentType: "application/json", body: body) }
            }
        case (.POST, "/api/echo"):
            let type = request.header("content-type")?.string ?? "application/octet-stream"
            response.respond(status: 200, contentType: type, body: request.body.buffer)
        case (.POST, "/api/sum"):
            guard let json = try? JSONParser.parse(request.body.array), let numbers = json["numbers"]?.arrayValue,
                numbers.allSatisfy({ $0.doubleValue != nil })
            else { return response.respond(notJSON) }
            let sum = numbers.reduce(0.0) { $0 + $1.doubleValue! }
            let body = JSON.object(["count": .integer(Int64(numbers.count)), "sum": sum.rounded() == sum ? .integer(Int64(sum)) : .number(sum)])
            response.respond(status: 200, contentType: "application/json", body: body.serialized)
        case (.GET, "/api/sleep"):
            // An async answer: `Task.sleep` suspends this task only; the worker serves its other
            // connections meanwhile, and the answer is written when the task is done.
            let text = request.query.string.split(separator: "&").first { $0.hasPrefix("ms=") }.map { String($0.dropFirst(3)) }
            guard let text, let ms = Int(text), (0...60_000).contains(ms) else {
                return response.respond(status: 400, contentType: "application/json", body: #"{"error":"ms must be 0...60000"}"#)
            }
            response.respondLater {
                try? await Task.sleep(for: .milliseconds(ms))
                return HTTPResponse(status: 200, contentType: "application/json", body: #"{"slept":\#(ms)}"#)
            }
        case (.GET, "/api/count"):
            // A streamed body: each line is sent as it is written; the writer waits while the
            // client is slower than the loop.
            let params = request.query.string.split(separator: "&")
            func value(_ key: String, _ range: ClosedRange<Int>) -> Int? {
                params.first { $0.hasPrefix(key + "=") }.flatMap { Int($0.dropFirst(key.count + 1)) }.flatMap { range.contains($0) ? $0 : nil }
            }
            guard let n = value("n", 0...100_000), let ms = value("ms", 0...10_000) ?? (request.query.string.contains("ms=") ? nil : 0) else {
                return response.respond(status: 400, contentType: "application/json", body: #"{"error":"n must be 0...100000, ms 0...10000"}"#)
            }
            response.respondLater {
                HTTPResponse(status: 200, contentType: "text/plain", stream: { body in
                    for i in 1...max(n, 1) where n > 0 {
                        if ms > 0 { try await Task.sleep(for: .milliseconds(ms)) }
                        try await body.write("\(i)\n")
                    }
                })
            }
        case (_, "/api/hello"), (_, "/api/echo"), (_, "/api/sum"), (_, "/api/sleep"), (_, "/api/count"):
            response.respond(status: 405, headers: [HTTPField("Allow", ["/api/hello", "/api/sleep", "/api/count"].contains(request.path.string) ? "GET" : "POST")], body: "method not allowed\n" as StaticString)
        default:
            fallback.handle(request, &response)
        }
    }
}

// An application sets up its own logging, as any swift-log program does; clusterd's loggers are its own.
LoggingSystem.bootstrap(StreamLogHandler.standardError)

Cluster.main(app: AppInfo(name: "clusterd-example", version: "1.0.0")) { context in
    var greeting = "hello"
    if let value = context.app?["greeting"] {
        guard let text = value.stringValue, !text.isEmpty else {
            throw ConfigError(file: context.config.source, keyPath: "app.greeting", message: "must be a non-empty string")
        }
        greeting = text
    }
    return ExampleAPI(fallback: try StockHandler(context: context), greeting: greeting)
}
