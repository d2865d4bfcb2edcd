// Instruction counts of the HTTP engine alone (no syscalls), for valgrind --tool=callgrind, which
// counts the same on a noisy machine. Built by scripts/engine-bench.sh with ClusterHTTP's sources.
//   valgrind --tool=callgrind .build/engine-bench/engine-bench 100000
// Feeds `requests` pipelined GETs (16 per read, as wrk's depth-16 script) through
// HTTPConnectionState with a pre-rendered response, as the stock "/" route does.

#if canImport(Glibc)
import Glibc
#endif

struct Hello: HTTPHandler {
    let response = PreparedResponse(status: 200, body: "Hello world!")
    let path: [UInt8] = Array("/".utf8)
    func handle(_ request: HTTPRequest, _ writer: inout HTTPResponseWriter) {
        if path.withUnsafeBytes({ request.path.equals($0) }) { writer.respond(response) } else { writer.respond(status: 404, body: "no\n" as StaticString) }
    }
}

@main
struct EngineBench {
    static func main() {
        let requests = CommandLine.arguments.count > 1 ? Int(CommandLine.arguments[1]) ?? 100_000 : 100_000
        let one = "GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
        let batch = Array(String(repeating: one, count: 16).utf8)
        let parser = HTTPParser(limits: HTTPLimits())
        var state = HTTPConnectionState()
        let input = IOBuffer(capacity: 65536)
        let output = IOBuffer(capacity: 65536)
        var counters = HTTPCounters()
        let date: [UInt8] = Array("Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n".utf8)
        var bytesOut = 0
        date.withUnsafeBytes { d in
            let context = ResponseContext(dateLine: d)
            for _ in 0..<(requests / 16) {
                input.write(batch)
                _ = state.process(input, output: output, parser: parser, context: context, handler: Hello(), counters: &counters)
                bytesOut += output.readableBytes
                output.clear()
            }
        }
        print("\(counters.requests) requests, \(bytesOut) bytes out")
    }
}
