import ClusterJSON
import Testing

@Suite struct JSONParsing {
    @Test func values() throws {
        let v = try JSONParser.parse(#"{"a": [1, -2.5, true, false, null, "x\n\u00e9\ud83d\ude00"], "b": {}}"#)
        #expect(v["a"] == [1, -2.5, true, false, nil, "x\né😀"])
        #expect(v["b"] == .object([:]))
        #expect(v["a"]?.arrayValue?.first?.intValue == 1)
    }

    @Test func keepsKeyOrderAndRoundTrips() throws {
        let text = #"{"z":1,"a":"q\"\\","m":[true,null]}"#
        let v = try JSONParser.parse(text)
        #expect(v.objectValue?.keys == ["z", "a", "m"])
        #expect(v.serialized == text)
    }

    @Test(arguments: [
        ("{\"a\":1,}", "trailing comma"), ("{\"a\":1,\"a\":2}", "duplicate key"), ("[01]", "leading zero"),
        ("{'a':1}", "single quotes"), ("[1] x", "garbage after"), ("\"\u{1}\"", "control char"), ("[1,", "truncated"),
        ("// c\n{}", "comment"), ("{\"a\" 1}", "missing colon"), ("[\"\\ud800\"]", "lone surrogate"), ("1e999", "overflow"),
    ])
    func rejects(_ input: String, _ why: String) {
        #expect(throws: JSONSyntaxError.self, "\(why)") { try JSONParser.parse(input) }
    }

    @Test func errorPosition() {
        do {
            _ = try JSONParser.parse("{\n  \"a\": 1,\n  \"b\" 2\n}")
            Issue.record("must fail")
        } catch {
            #expect(error.line == 3)
            #expect(error.description.contains("expected ':'"))
        }
    }

    /// What follows an object member or an array element: the messages name the position and
    /// what was expected (one routine serves both).
    @Test(arguments: [
        ("{\"a\":1,}", "trailing comma before '}' (JSON allows none)", 7), ("[1, ]", "trailing comma before ']' (JSON allows none)", 3),
        ("{\"a\":1 \"b\":2}", "expected ',' or '}' after the value of \"a\"", 8), ("[1 2]", "expected ',' or ']' in array", 4),
    ])
    func separators(_ input: String, _ message: String, _ column: Int) {
        do {
            _ = try JSONParser.parse(input)
            Issue.record("must fail")
        } catch {
            #expect(error.description.contains(message), "\(error)")
            #expect(error.column == column, "\(error)")
        }
    }

    @Test func depthLimit() {
        let deep = String(repeating: "[", count: 100) + String(repeating: "]", count: 100)
        #expect(throws: JSONSyntaxError.self) { try JSONParser.parse(deep) }
    }

    /// Comments are a config-file option only: the control protocol (the default) stays RFC 8259.
    @Test func commentsOnlyWhenAllowed() throws {
        let text = "/* a */ {\"a\": 1, // b\n \"c\": \"/* d */\"} // e"
        #expect(throws: JSONSyntaxError.self) { try JSONParser.parse(text) }
        let v = try JSONParser.parse(text, options: .config)
        #expect(v == ["a": 1, "c": "/* d */"])
        #expect(throws: JSONSyntaxError.self) { try JSONParser.parse("{} /* open", options: .config) }
        #expect(throws: JSONSyntaxError.self) { try JSONParser.parse("{} / 1", options: .config) }
    }
}
