import Logging
import PostgresNIO

/// The SQL of the API over one `PostgresClient` (a pool). Every method is one statement, so no
/// transaction is needed: each write is atomic and its row comes back with `RETURNING`.
public struct TodoStore: Sendable {
    public let client: PostgresClient
    public let logger: Logger

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    public func create(title: String) async throws -> Todo {
        let rows = try await client.query("INSERT INTO todos (title) VALUES (\(title)) RETURNING id, title, done", logger: logger)
        for try await (id, title, done) in rows.decode((Int64, String, Bool).self) {
            return Todo(id: id, title: title, done: done)
        }
        throw MissingRow()
    }

    public func list() async throws -> [Todo] {
        let rows = try await client.query("SELECT id, title, done FROM todos ORDER BY id", logger: logger)
        var todos: [Todo] = []
        for try await (id, title, done) in rows.decode((Int64, String, Bool).self) {
            todos.append(Todo(id: id, title: title, done: done))
        }
        return todos
    }

    public func find(id: Int64) async throws -> Todo? {
        let rows = try await client.query("SELECT id, title, done FROM todos WHERE id = \(id)", logger: logger)
        return try await first(rows)
    }

    /// Changes what is given (nil: unchanged); nil when there is no such todo.
    public func update(id: Int64, title: String?, done: Bool?) async throws -> Todo? {
        let rows = try await client.query(
            "UPDATE todos SET title = COALESCE(\(title), title), done = COALESCE(\(done), done) WHERE id = \(id) RETURNING id, title, done",
            logger: logger)
        return try await first(rows)
    }

    /// False when there was no such todo.
    public func delete(id: Int64) async throws -> Bool {
        let rows = try await client.query("DELETE FROM todos WHERE id = \(id) RETURNING id", logger: logger)
        var found = false
        for try await _ in rows.decode(Int64.self) { found = true }
        return found
    }

    private func first(_ rows: PostgresRowSequence) async throws -> Todo? {
        var todo: Todo? = nil
        for try await (id, title, done) in rows.decode((Int64, String, Bool).self) where todo == nil {
            todo = Todo(id: id, title: title, done: done)
        }
        return todo
    }

    /// `INSERT … RETURNING` answered no row: PostgreSQL's bug or a trigger's, never the client's.
    struct MissingRow: Error {}
}
