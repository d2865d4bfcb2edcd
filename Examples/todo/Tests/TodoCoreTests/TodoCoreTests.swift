import Testing
import TodoCore

@Suite struct DatabaseURLTests {
    @Test func tcp() throws {
        let url = try DatabaseURL("postgres://ada:p%40ss@db.example:5433/todo")
        #expect(url.username == "ada" && url.password == "p@ss" && url.host == "db.example" && url.port == 5433)
        #expect(url.database == "todo" && url.socketPath == nil)
    }

    @Test func defaults() throws {
        let url = try DatabaseURL("postgresql://localhost")
        #expect(url.username == "postgres" && url.password == nil && url.host == "localhost" && url.port == 5432 && url.database == nil)
    }

    @Test func unixSocketDirectory() throws {
        let url = try DatabaseURL("postgres://postgres@/todo?host=/tmp/pg%20dir&port=6001")
        #expect(url.host == nil && url.socketPath == "/tmp/pg dir/.s.PGSQL.6001" && url.database == "todo")
        let withPort = try DatabaseURL("postgres://postgres@localhost:6002/todo?host=/run/postgresql")
        #expect(withPort.socketPath == "/run/postgresql/.s.PGSQL.6002")
    }

    @Test func ipv6() throws {
        let url = try DatabaseURL("postgres://u@[::1]:6000/d")
        #expect(url.host == "::1" && url.port == 6000)
    }

    @Test(arguments: ["mysql://x/y", "postgres://u@h:0/d", "postgres://u@h:99999/d", "postgres://u@h:x/d",
                      "postgres://%zz@h/d", "postgres://u@h/d?sslmode=require", "localhost"])
    func refused(_ text: String) {
        #expect(throws: DatabaseURL.Invalid.self) { try DatabaseURL(text) }
    }
}

@Suite struct TodoJSONTests {
    @Test func encoding() {
        #expect(String(decoding: TodoJSON.encode(Todo(id: 7, title: "milk \"2%\"", done: false)), as: UTF8.self)
            == #"{"done":false,"id":7,"title":"milk \"2%\""}"#)
        #expect(String(decoding: TodoJSON.encode([Todo]()), as: UTF8.self) == "[]")
        #expect(String(decoding: TodoJSON.error("no such todo"), as: UTF8.self) == #"{"error":"no such todo"}"#)
    }

    @Test func newTodo() throws {
        #expect(try TodoJSON.decodeNew(Array(#"{"title":"bread","extra":1}"#.utf8)) == "bread")
        for bad in ["", "{", "[]", #"{"title":1}"#, #"{"name":"x"}"#, #"{"title":""}"#, #"{"title":"\#(String(repeating: "x", count: 1001))"}"#] {
            #expect(throws: BadRequest.self) { try TodoJSON.decodeNew(Array(bad.utf8)) }
        }
    }

    @Test func patch() throws {
        let both = try TodoJSON.decodePatch(Array(#"{"done":true,"title":"t"}"#.utf8))
        #expect(both.title == "t" && both.done == true)
        let done = try TodoJSON.decodePatch(Array(#"{"done":false}"#.utf8))
        #expect(done.title == nil && done.done == false)
        for bad in ["{}", #"{"done":"yes"}"#, #"{"title":""}"#, "null"] {
            #expect(throws: BadRequest.self) { try TodoJSON.decodePatch(Array(bad.utf8)) }
        }
    }

    @Test func ids() {
        #expect(TodoJSON.id("42") == 42)
        for bad in ["", "0", "-1", "+1", "1a", " 1", "99999999999999999999"] { #expect(TodoJSON.id(bad) == nil) }
    }
}
