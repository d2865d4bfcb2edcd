import ClusterHTTP
import ClusterSystem
import Synchronization

/// The executor of the tasks a worker's handlers start (`HTTPResponseWriter.respondLater`): their
/// jobs run on the worker's own thread, between two turns of its epoll loop (`runJobs`), so handler
/// code shares the worker's state without locks, and a task that awaits (a database, `Task.sleep`)
/// costs the other connections nothing while it waits.
///
/// A job enqueued from the loop's own thread (a task's first step, a continuation resumed by other
/// code on the loop) is run before the loop sleeps again; one enqueued from another thread (a timer,
/// a database driver's event loop resuming a continuation) also writes the worker's wake-up
/// descriptor (an eventfd in its epoll set), so a sleeping loop wakes for it.
///
/// Tasks started here prefer this executor (`Task(executorPreference:)`): every non-isolated async
/// function they call runs here too, and each `await` comes back here.
public final class LoopExecutor: TaskExecutor, @unchecked Sendable {
    /// A deferred answer that is done, for the connection it belongs to.
    struct Completion: Sendable {
        var fd: Int32
        var generation: UInt32
        var response: HTTPResponse
    }

    struct Queues: ~Copyable {
        var jobs: [UnownedJob] = []
        var completions: [Completion] = []
    }

    private let queues = Mutex(Queues())
    /// Set whenever a job or a completion is queued: the loop checks it once a turn, lock-free.
    private let pending = Atomic<Bool>(false)
    /// Wakes the loop from another thread (the eventfd in its epoll set); nil where nothing sleeps
    /// (tests).
    private let wake: EventFd?
    private let loopThread: ThreadIdentity
    /// Tasks started and not yet completed (the loop's own count; read on the loop only).
    private(set) var inFlight = 0

    /// Made on the loop's thread, which is the one that runs the jobs.
    init(wake: EventFd?) {
        self.wake = wake
        self.loopThread = ThreadIdentity()
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        queues.withLock { $0.jobs.append(job) }
        pending.store(true, ordering: .releasing)
        if !loopThread.isCurrent { wake?.signal() }
    }

    /// Whether jobs or completions wait (the loop must not sleep).
    var hasWork: Bool { pending.load(ordering: .acquiring) }

    /// Starts `work` as a task on this executor; its answer is queued for `fd` when it is done.
    func start(_ work: @escaping DeferredResponse, fd: Int32, generation: UInt32) {
        inFlight += 1
        Task(executorPreference: self) { [self] in
            let response = await work()
            complete(Completion(fd: fd, generation: generation, response: response))
        }
    }

    /// Runs a streamed body's closure as a task here; `stream.failed` says how it ended.
    func startStream(_ stream: ResponseStream, _ body: @escaping ResponseBodyStream) {
        Task(executorPreference: self) { [self] in
            do {
                try await body(ResponseBodyWriter(sink: stream))
                stream.failed = false
            } catch {
                stream.failed = true
            }
            markPending()
        }
    }

    /// Makes the loop run deferred work on its next turn without sleeping (a stream has pieces to
    /// send, or room again). From the loop's own thread.
    func markPending() {
        pending.store(true, ordering: .releasing)
        if !loopThread.isCurrent { wake?.signal() }
    }

    private func complete(_ completion: Completion) {
        queues.withLock { $0.completions.append(completion) }
        pending.store(true, ordering: .releasing)
        if !loopThread.isCurrent { wake?.signal() }
    }

    /// Runs what is queued, and what that queues in turn, up to `rounds` batches (so that tasks
    /// that keep yielding cannot starve the connections); then returns the completions, in order.
    func runJobs(rounds: Int = 8) -> [Completion] {
        guard pending.exchange(false, ordering: .acquiringAndReleasing) else { return [] }
        var done: [Completion] = []
        for _ in 0..<rounds {
            let (jobs, completions) = queues.withLock { q -> ([UnownedJob], [Completion]) in
                let taken = (q.jobs, q.completions)
                q.jobs = []
                q.completions = []
                return taken
            }
            done += completions
            if jobs.isEmpty { break }
            for job in jobs { job.runSynchronously(on: asUnownedTaskExecutor()) }
        }
        // What is still queued (more rounds than allowed, or completions of the last round) is
        // left for the next turn, which will not sleep (`hasWork`).
        let left = queues.withLock { q -> Bool in
            if !q.jobs.isEmpty { return true }
            done += q.completions
            q.completions = []
            return false
        }
        if left { pending.store(true, ordering: .releasing) }
        inFlight -= done.count
        return done
    }
}
