import ArgumentParser
import ClusterControl

struct Scale: ControlCommand {
    static let configuration = CommandConfiguration(
        abstract: "Set the number of workers: N, +k or -k.",
        discussion: "Scale-down retires the highest slots: new connections are steered away first, then their workers drain.")

    @OptionGroup var options: ChangeOptions
    @ParentCommand var root: Clusterctl
    var connection: ConnectionOptions { options.connection }

    @Argument(parsing: .allUnrecognized, help: ArgumentHelp("N (absolute), +k or -k (relative).", valueName: "count"))
    var count: [String] = []

    static func parse(_ text: String) -> ControlRequest.ScaleTarget? {
        if text.hasPrefix("+"), let k = Int(text.dropFirst()), k >= 0 { return .relative(k) }
        if text.hasPrefix("-"), let k = Int(text.dropFirst()), k >= 0 { return .relative(-k) }
        if let n = Int(text), text.first?.isNumber == true { return .absolute(n) }
        return nil
    }

    func validate() throws {
        guard count.count == 1 else { throw ValidationError("give exactly one count: N, +k or -k") }
        guard Self.parse(count[0]) != nil else { throw ValidationError("'\(count[0])' is not N, +k or -k") }
    }

    func run() throws {
        let answer = try send(.scale(Self.parse(count[0])!, wait: options.wait))
        let workers = answer["workers"]?.int64Value ?? 0
        print(answer["ready"] != nil ? "scaled to \(workers) workers (\(answer["ready"]?.int64Value ?? 0) ready)" : "scaled to \(workers) workers")
    }
}
