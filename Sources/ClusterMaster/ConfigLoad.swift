import ClusterConfig
import ClusterSystem

/// A reload's load of the config file, all of it off the master's loop: the read, the decode, and
/// the validation (`Master.Options.validate`: the environment check, which opens the access log
/// for append and looks at the control socket's path, and the app's handler built once, which
/// `stat`s and opens static roots). Any of these can block on a hung network filesystem; the loop
/// only waits for `call.readyFD`, and the core gives up at its deadline (`configReadTimeout`).
///
/// What comes back is plain values: the bytes (the call's result) and the decoded config or the
/// error's text (`outcome`). The background thread writes `outcome` before the call returns; the
/// loop reads it only once `call.result` is set, which `BackgroundCall`'s lock orders after that write.
public final class ConfigLoad: @unchecked Sendable {
    public enum Outcome {
        case loaded(ClusterConfiguration)
        case failed(String)
    }

    /// The validation, called on the background thread. The app's handler factory runs there too:
    /// it must only build a value (the stock handler checks and maps its static roots), as it does
    /// in every worker.
    public struct Validation: @unchecked Sendable {
        let check: (ClusterConfiguration) throws -> Void
        public init(check: @escaping (ClusterConfiguration) throws -> Void) { self.check = check }
    }

    public let call: BackgroundCall
    private let box: Box

    private init(call: BackgroundCall, box: Box) {
        self.call = call
        self.box = box
    }

    /// Decoded and checked (or what failed); nil while the call runs, or when the read itself
    /// failed (`call.result` says why).
    public var outcome: Outcome? {
        guard case .success? = call.result else { return nil }
        return box.outcome
    }

    public static func start(path: String, limit: Int = 4 * 1024 * 1024, validate: Validation) throws(SystemError) -> ConfigLoad {
        let box = Box()
        let call = try BackgroundCall.start { () throws(SystemError) -> [UInt8] in
            let bytes = try FileIO.readRegularFile(path: path, limit: limit)
            do {
                let config = try ClusterConfiguration.decode(bytes, file: path)
                try validate.check(config)
                box.outcome = .loaded(config)
            } catch {
                box.outcome = .failed("\(error)")
            }
            return bytes
        }
        return ConfigLoad(call: call, box: box)
    }

    /// Written by the thread before the call returns, read after `call.result` is set.
    private final class Box: @unchecked Sendable {
        var outcome: Outcome? = nil
    }
}
