#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// One row of `todos`, as the API answers it: `{"id":1,"title":"milk","done":false}`.
public struct Todo: Codable, Sendable, Equatable {
    public var id: Int64
    public var title: String
    public var done: Bool

    public init(id: Int64, title: String, done: Bool) {
        self.id = id
        self.title = title
        self.done = done
    }
}

/// A request body the API refuses (400), with the reason it tells the client.
public struct BadRequest: Error, Equatable, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
}

/// The API's JSON in and out, shared by both servers so that they answer byte for byte alike.
public enum TodoJSON {
    /// Titles longer than this are refused: a todo is a line, not a document.
    public static let maxTitleBytes = 1000

    public static func encode(_ todo: Todo) -> [UInt8] { encodeValue(todo) }
    public static func encode(_ todos: [Todo]) -> [UInt8] { encodeValue(todos) }
    /// `{"error":"..."}`
    public static func error(_ message: String) -> [UInt8] { encodeValue(["error": message]) }

    /// `POST /todos`'s body: `{"title": "..."}` (other keys ignored).
    public static func decodeNew(_ body: [UInt8]) throws(BadRequest) -> String {
        struct New: Decodable { var title: String }
        guard let new = try? JSONDecoder().decode(New.self, from: Data(body)) else {
            throw BadRequest(#"body must be JSON: {"title": "..."}"#)
        }
        return try validTitle(new.title)
    }

    /// `PATCH /todos/:id`'s body: `{"done": true}`, `{"title": "..."}` or both.
    public static func decodePatch(_ body: [UInt8]) throws(BadRequest) -> (title: String?, done: Bool?) {
        struct Patch: Decodable { var title: String?; var done: Bool? }
        guard let patch = try? JSONDecoder().decode(Patch.self, from: Data(body)) else {
            throw BadRequest(#"body must be JSON: {"title": "...", "done": true|false}"#)
        }
        guard patch.title != nil || patch.done != nil else { throw BadRequest(#"nothing to change: give "title" and/or "done""#) }
        return (try patch.title.map { (t) throws(BadRequest) in try validTitle(t) }, patch.done)
    }

    /// A todo id from the path: a positive integer, else nil (the answer is 404, no such todo).
    public static func id<S: StringProtocol>(_ text: S) -> Int64? {
        guard !text.isEmpty, text.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
            let id = Int64(text), id > 0
        else { return nil }
        return id
    }

    static func validTitle(_ title: String) throws(BadRequest) -> String {
        guard !title.isEmpty else { throw BadRequest("title must not be empty") }
        guard title.utf8.count <= maxTitleBytes else { throw BadRequest("title is longer than \(maxTitleBytes) bytes") }
        return title
    }

    static func encodeValue<T: Encodable>(_ value: T) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        // Encoding these plain values cannot fail; an empty object is the safe answer if it ever did.
        return (try? Array(encoder.encode(value))) ?? Array("{}".utf8)
    }
}
