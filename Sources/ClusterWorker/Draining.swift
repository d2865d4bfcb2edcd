import ClusterControl
import ClusterHTTP
import ClusterSystem

/// Deadlines, stopping and draining: what ends connections other than their clients.
extension HTTPWorker {
    /// Once a turn: resumes a paused accept, ends a retiring worker's accept grace, retries queued
    /// hand-offs, enforces `drainTimeout`, and (every 250 ms) gives each connection whose deadline
    /// passed its `timedOut` step.
    func expireTimers() {
        let now = io.now
        if let at = acceptResumeAt, now >= at { resumeAcceptingIfPossible() }
        if let until = acceptUntil, now >= until {
            for fd in listeners where acceptingRegistered { acceptConnections(fd) }
            acceptUntil = nil
            unregisterListeners()
        }
        if !handoffQueue.isEmpty { flushHandoffs() }
        if state == .draining, let deadline = drainDeadline, now >= deadline {
            logger.warning("drain timeout: closing \(table.openCount) busy connection(s)")
            stats.add(.connectionsClosedOnDrain, UInt64(table.openCount))
            for fd in 0..<table.endIndex where table[fd].isOpen { perform(table[fd].close(&io, kernel), on: fd) }
            return
        }
        guard now >= nextSweep else { return }
        nextSweep = now + 250
        let closingIdle = state == .draining && drainMode == .close
        for fd in 0..<table.endIndex where table[fd].isOpen && table[fd].deadline <= now {
            let closeIdle = closingIdle || table[fd].closeAfterResponse
            perform(table[fd].timedOut(&io, kernel, closeIdle: closeIdle), on: fd)
        }
    }

    /// Closes an idle keep-alive connection so that no request on it is lost: a request that has
    /// already arrived is read and answered (`Connection: close`); otherwise the write side is shut
    /// (FIN) and the connection lingers, reading and discarding, until the client closes or
    /// `lingerTimeout`: a request that crossed the FIN gets no reset, and the client sees the
    /// connection end before any byte of a response, the case HTTP clients retry (RFC 9112 §9.3.1).
    func closeIdleGracefully(_ fd: Int32) {
        perform(table[fd].readable(&io, kernel, handler), on: fd)
        guard table.isOpen(fd), table[fd].mayShutDownIdle else { return }
        table[fd].shutDownAndLinger(io, kernel)
    }

    /// Fast stop (INT/QUIT, which is also what the master sends when a drain times out): whatever
    /// is still open is closed with the process, and counted and logged as such.
    func stopNow() {
        if table.openCount > 0 {
            logger.warning("stopping with \(table.openCount) connection(s) still open; they are closed")
            stats.add(.connectionsClosedOnDrain, UInt64(table.openCount))
            // Counted here: a KILL before the exit must not count them again (the master counts
            // what a dead worker last published as open).
            stats[.openConnections] = 0
        }
        state = .stopping
        io.closeConnections = true
    }

    /// Stop accepting (after `acceptGrace` ms of taking what is already queued); let in-flight
    /// requests finish; idle keep-alive connections are handed off (`.handOff`) or closed (`.close`).
    /// The loop ends when no connection is left.
    public func beginDrain(mode: DrainMode, timeout: Int64?, acceptGrace: Int64 = 0) {
        if state == .draining && drainMode == .handOff && mode == .close {
            // The daemon stops while this worker hands its connections over (a reload's or
            // scale-down's): nothing takes them now; close them instead, gracefully.
            drainMode = .close
            io.closeConnections = true
            // Those still waiting for room on the channel are not sent either.
            handoffQueue = []
            for fd in 0..<table.endIndex where table[fd].isOpen && table[fd].isIdle {
                table[fd].deadline = min(table[fd].deadline, io.now + settings.drainIdleGrace)
            }
            return
        }
        guard state == .running else { return }
        // The loop reads the clock after its wait: an idle worker's `now` can be up to its 500 ms
        // wait old here, and the drain's deadlines (idle grace, accept grace, timeout) count from it.
        io.now = kernel.monotonicMilliseconds()
        // Take what is already queued on our listeners first.
        for fd in listeners where acceptingRegistered { acceptConnections(fd) }
        state = .draining
        drainMode = channel == nil ? .close : mode
        io.closeConnections = drainMode == .close
        if drainMode == .close { lifecycle.isStopping = true }
        if let timeout { drainDeadline = io.now + timeout }
        if acceptGrace > 0 { acceptUntil = io.now + acceptGrace } else { unregisterListeners() }
        stats[.state] = WorkerState.draining.rawValue
        send(.draining)
        for fd in 0..<table.endIndex where table[fd].isOpen && table[fd].isIdle {
            if drainMode == .handOff {
                handOffIfIdle(fd)
            } else {
                // Not closed at once: a client may be sending its next request right now. For
                // `drainIdleGrace` what arrives is answered with `Connection: close`; then the
                // connection is closed gracefully (`closeIdleGracefully`).
                table[fd].deadline = min(table[fd].deadline, io.now + settings.drainIdleGrace)
            }
        }
    }

    /// A graceful stop with `shutdownDelay` began: keep accepting and serving, every response with
    /// `Connection: close` (a client reconnects, through its balancer, elsewhere), and let the
    /// handler say so on `/healthz`. The master's `drain` follows when the delay ends.
    func announceStop() {
        guard state == .running else { return }
        lifecycle.isStopping = true
        io.closeConnections = true
    }

    /// The master that started this worker still runs: it is still the parent (once it dies the
    /// worker is reparented before the parent-death TERM arrives).
    var masterIsAlive: Bool {
        guard let masterPID, channel != nil, state == .running else { return false }
        return Sys.parentPID == masterPID
    }

    func signalReadable() {
        guard let signals else { return }
        while let signal = try? signals.next() {
            switch signal {
            case SignalNumber.terminate:
                if masterIsAlive {
                    // TERM to the whole process group (`kill -TERM -PGID`, a supervisor or shell
                    // that signals the group): the master got it too and runs the stop. Draining
                    // now, this worker could reach 0 connections and exit before the master's
                    // accept grace ends, leaving what is queued on the listeners to be reset when
                    // the master, with no worker left, exits. It keeps serving until the master's
                    // `drain` (or the master's death: the parent-death TERM, the channel's end).
                    logger.notice("TERM: the master (pid \(masterPID ?? 0)) runs the stop; serving until it says drain (INT/QUIT stop this worker now)")
                } else {
                    beginDrain(mode: .close, timeout: nil)
                }
            case SignalNumber.interrupt, SignalNumber.quit: stopNow()
            case SignalNumber.user1: io.accessLog?.reopen()
            default: break  // HUP: the master's business
            }
        }
    }
}
