#if canImport(Glibc)
import Glibc
#endif
import CClusterShims

/// One blocking call (reading a file that may sit on a hung network mount) run on a thread of its
/// own, so that the caller's event loop never waits on it. `readyFD` becomes readable when the call
/// has returned; `result` is nil until then. A caller that stops waiting (a deadline) just drops
/// its reference after removing `readyFD` from its selector: the thread keeps the object alive until
/// the call returns, whenever that is, and the descriptors are closed then.
public final class BackgroundCall: @unchecked Sendable {
    /// What the call produces (bytes: it is for reads; a C thread entry cannot be generic).
    public typealias Value = [UInt8]

    /// Readable once the call has returned (the read end of a pipe).
    public let readyFD: Int32
    private let writeFD: Int32
    private let lock: UnsafeMutablePointer<pthread_mutex_t>
    private var outcome: Result<Value, SystemError>? = nil
    private let work: @Sendable () throws(SystemError) -> Value

    private init(readyFD: Int32, writeFD: Int32, work: @escaping @Sendable () throws(SystemError) -> Value) {
        self.readyFD = readyFD
        self.writeFD = writeFD
        self.work = work
        lock = .allocate(capacity: 1)
        pthread_mutex_init(lock, nil)
    }

    /// Starts `work` on a new detached thread.
    public static func start(_ work: @escaping @Sendable () throws(SystemError) -> Value) throws(SystemError) -> BackgroundCall {
        let (readEnd, writeEnd) = try Sys.pipe()
        let call = BackgroundCall(readyFD: readEnd, writeFD: writeEnd, work: work)
        let retained = Unmanaged.passRetained(call).toOpaque()
        let rc = call.detach(retained)
        if rc != 0 {
            Unmanaged<BackgroundCall>.fromOpaque(retained).release()
            throw SystemError(call: "pthread_create", errno: rc)
        }
        return call
    }

    /// pthread_create of a detached thread that takes over the retained reference `argument`.
    private func detach(_ argument: UnsafeMutableRawPointer) -> Int32 {
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        defer { pthread_attr_destroy(&attributes) }
        pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
        var thread = pthread_t()
        return pthread_create(&thread, &attributes, { argument in
            let call = Unmanaged<BackgroundCall>.fromOpaque(argument!).takeRetainedValue()
            call.runOnThread()
            return nil
        }, argument)
    }

    deinit {
        Sys.close(readyFD)
        Sys.close(writeFD)
        pthread_mutex_destroy(lock)
        lock.deallocate()
    }

    private func runOnThread() {
        let result: Result<Value, SystemError>
        do { result = .success(try work()) } catch { result = .failure(error) }
        pthread_mutex_lock(lock)
        outcome = result
        pthread_mutex_unlock(lock)
        var byte: UInt8 = 1
        _ = try? Sys.write(writeFD, &byte, 1)
    }

    /// What the call returned or threw; nil while it is still running.
    public var result: Result<Value, SystemError>? {
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        return outcome
    }
}
