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

    private let jobs = Mutex<[UnownedJob]>([])
    // The properties below are the loop thread's alone (jobs from elsewhere go through `jobs`), in
    // accesses that never overlap: no run-time exclusivity checks (as HTTPWorker's loop state).
    /// Swapped with `jobs` to run a batch, so that neither array is reallocated each turn.
    @exclusivity(unchecked) private var spareJobs: [UnownedJob] = []
    /// Finished answers. Only the loop's thread touches these: a deferred answer's task ends on
    /// this executor (its body is non-isolated and prefers it).
    @exclusivity(unchecked) private var completions: [Completion] = []
    @exclusivity(unchecked) private var spareCompletions: [Completion] = []
    /// Set whenever a job or a completion is queued: the loop checks it once a turn, lock-free.
    private let pending = Atomic<Bool>(false)
    /// Wakes the loop from another thread (the eventfd in its epoll set); nil where nothing sleeps
    /// (tests).
    private let wake: EventFd?
    private let loopThread: ThreadIdentity
    /// Tasks started and not yet completed (the loop's own count; read on the loop only).
    @exclusivity(unchecked) private(set) var inFlight = 0

    /// Made on the loop's thread, which is the one that runs the jobs.
    init(wake: EventFd?) {
        self.wake = wake
        self.loopThread = ThreadIdentity()
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        // (Set under the lock: `runJobs` decides under it whether anything is left.)
        jobs.withLock { $0.append(job); pending.store(true, ordering: .releasing) }
        if !loopThread.isCurrent { wake?.signal() }
    }

    /// Whether the caller runs on the loop's thread.
    var isOnLoop: Bool { loopThread.isCurrent }

    /// Whether jobs or completions wait (the loop must not sleep).
    var hasWork: Bool { pending.load(ordering: .acquiring) }

    /// Starts `work` as a task on this executor; its answer is queued for `fd` when it is done.
    func start(_ work: @escaping DeferredResponse, fd: Int32, generation: UInt32) {
        inFlight += 1
        // Started immediately: its first steps run here and now, on the loop, up to its first
        // suspension (an answer that never waits is complete when this returns); from then on it
        // continues on this executor.
        Task.immediate(executorPreference: self) { [self] in
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
        if loopThread.isCurrent {
            completions.append(completion)
            pending.store(true, ordering: .releasing)
        } else {
            // Not expected (the task ends on this executor); kept correct all the same.
            enqueueCompletionFromElsewhere(completion)
        }
    }

    private func enqueueCompletionFromElsewhere(_ completion: Completion) {
        Task(executorPreference: self) { [self] in complete(completion) }
    }

    /// Runs what is queued, and what that queues in turn, up to `rounds` batches (so that tasks
    /// that keep yielding cannot starve the connections); then hands each finished answer, in
    /// order, to `body` (which may start new tasks: those run on a later turn).
    func runJobs(rounds: Int = 8, _ body: (Completion) -> Void) {
        guard pending.exchange(false, ordering: .acquiringAndReleasing) else { return }
        for _ in 0..<rounds {
            jobs.withLock { swap(&$0, &spareJobs) }
            if spareJobs.isEmpty { break }
            for job in spareJobs { job.runSynchronously(on: asUnownedTaskExecutor()) }
            spareJobs.removeAll(keepingCapacity: true)
        }
        if !completions.isEmpty {
            swap(&completions, &spareCompletions)
            inFlight -= spareCompletions.count
            for done in spareCompletions { body(done) }
            spareCompletions.removeAll(keepingCapacity: true)
        }
        // Due again on the next turn (which will not sleep: `hasWork`) only if something is queued
        // now: more jobs than the rounds allowed, one from another thread, or one the answers just
        // started. (What else marked this pending — a stream's pieces, a body's room — the caller
        // handles right after this, in the same `runDeferred`.)
        jobs.withLock { pending.store(!$0.isEmpty || !completions.isEmpty, ordering: .releasing) }
    }
}
