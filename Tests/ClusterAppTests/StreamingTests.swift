import ClusterApp
import ClusterTesting
import Testing

/// Takes its body as it arrives (`streamsBody`) and answers with its length, streamed back in
/// three pieces.
struct UploadCounter: HTTPHandler {
    func streamsBody(_ request: HTTPRequest) -> Bool { true }

    func handle(_ request: HTTPRequest, _ response: inout HTTPResponseWriter) {
        let body = request.bodyStream
        response.respondLater {
            var total = 0
            do {
                if let body { for try await piece in body { total += piece.count } }
            } catch {
                return HTTPResponse(status: 400, body: "cut short\n")
            }
            let received = total
            return HTTPResponse(status: 200, stream: { writer in
                try await writer.write("received ")
                try await writer.write("\(received)")
                try await writer.write(" bytes\n")
            })
        }
    }
}

@Suite struct Streaming {
    @Test func testClientStreamsBodiesBothWays() async {
        let client = TestClient(handler: UploadCounter())
        let response = await client.execute("POST", "/upload", body: [UInt8](repeating: 7, count: 100_000))
        #expect(response.status == 200)
        #expect(response.header("Transfer-Encoding") == "chunked")
        #expect(response.text == "received 100000 bytes\n")
        let chunked = "POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        #expect(await client.send(Array(chunked.utf8)).text == "received 5 bytes\n")
        let head = await client.head("/upload")
        #expect(head.status == 200)
        #expect(head.body.isEmpty)
    }

    @Test func routesMayStreamTheirAnswer() async {
        let router = Router()
        router.get("/count/:n") { request, _ in
            let n = try request.parameters.require("n", as: Int.self)
            return Response(headers: [HTTPField("Content-Type", "text/plain")], stream: { writer in
                for i in 1...n { try await writer.write("\(i)\n") }
            })
        }
        let response = await client(router).get("/count/3")
        #expect(response.status == 200)
        #expect(response.header("Content-Type") == "text/plain")
        #expect(response.text == "1\n2\n3\n")
    }
}

@Suite struct StreamedBodyRoutes {
    @Test func aRouteMayTakeItsBodyAsItArrivesPastMaxBodyBytes() async {
        let router = Router()
        router.on("/upload/:name", method: .POST, streamingBody: true) { request, _ in
            var total = 0
            for try await piece in request.bodyStream! { total += piece.count }
            return "\(request.parameters["name"] ?? "?") \(total) \(request.body.count)"
        }
        router.post("/small") { request, _ in "\(request.body.count)" }
        let handler = router.handler(fallback: UploadCounter())
        var limits = HTTPLimits()
        limits.maxBodyBytes = 1_000
        let client = TestClient(handler: handler, limits: limits)
        let big = [UInt8](repeating: 1, count: 50_000)
        #expect(await client.execute("POST", "/upload/x", body: big).text == "x 50000 0")
        // Other routes keep the limit and get the body whole.
        #expect(await client.execute("POST", "/small", body: big).status == 413)
        #expect(await client.execute("POST", "/small", body: [1, 2, 3]).text == "3")
    }
}
