import ClusterControl
import ClusterHTTP

/// The whole cluster's numbers in the Prometheus text format (version 0.0.4), read by whichever
/// worker got the request from the shared stats segment: totals (including exited workers), one
/// series per live worker, the master's gauges, and a request latency histogram.
public enum MetricsRenderer {
    public static func render(_ segment: StatsSegment) -> String {
        var out = ""
        out.reserveCapacity(8192)
        func family(_ name: String, _ type: String, _ help: String) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
        }
        func sample(_ name: String, _ labels: String = "", _ value: UInt64) {
            out += labels.isEmpty ? "\(name) \(value)\n" : "\(name){\(labels)} \(value)\n"
        }
        let master = segment.master
        let workers = segment.liveWorkers
        let sums = segment.totals()
        func value(_ segment: StatsSegment, _ field: StatsSlot.Field) -> UInt64 { sums[field.rawValue] }

        family("clusterd_requests_total", "counter", "Requests answered by all workers, including exited ones.")
        sample("clusterd_requests_total", "", value(segment, .requests))
        family("clusterd_responses_total", "counter", "Responses by status class.")
        for (cls, field) in [("1xx", StatsSlot.Field.status1xx), ("2xx", .status2xx), ("3xx", .status3xx), ("4xx", .status4xx), ("5xx", .status5xx)] {
            sample("clusterd_responses_total", "class=\"\(cls)\"", value(segment, field))
        }
        family("clusterd_received_bytes_total", "counter", "Bytes read from clients.")
        sample("clusterd_received_bytes_total", "", value(segment, .bytesIn))
        family("clusterd_sent_bytes_total", "counter", "Bytes written to clients.")
        sample("clusterd_sent_bytes_total", "", value(segment, .bytesOut))
        family("clusterd_connections_accepted_total", "counter", "Connections accepted.")
        sample("clusterd_connections_accepted_total", "", value(segment, .accepted))
        family("clusterd_connections_open", "gauge", "Connections open now.")
        sample("clusterd_connections_open", "", value(segment, .openConnections))
        family("clusterd_request_errors_total", "counter", "Requests refused as malformed or over a limit.")
        sample("clusterd_request_errors_total", "", value(segment, .parseErrors))
        family("clusterd_connections_handed_off_total", "counter", "Keep-alive connections moved from a retiring worker to a live one.")
        sample("clusterd_connections_handed_off_total", "", UInt64(master[.handedOff]))
        family("clusterd_connections_closed_on_drain_total", "counter", "Connections still busy when a drain timed out.")
        sample("clusterd_connections_closed_on_drain_total", "", value(segment, .connectionsClosedOnDrain))
        family("clusterd_handoffs_closed_at_cap_total", "counter", "Keep-alive connections handed to a worker at http.maxConnections and closed gracefully.")
        sample("clusterd_handoffs_closed_at_cap_total", "", value(segment, .handoffsClosedAtCap))
        family("clusterd_proxy_protocol_refused_total", "counter", "Connections to a proxyProtocol listener closed unread: from a peer outside trustedProxies (untrusted), or without a valid PROXY header in time (invalid).")
        sample("clusterd_proxy_protocol_refused_total", "reason=\"untrusted\"", value(segment, .proxyUntrusted))
        sample("clusterd_proxy_protocol_refused_total", "reason=\"invalid\"", value(segment, .proxyInvalid))
        family("clusterd_tls_handshakes_total", "counter", "TLS handshakes by outcome: completed in full, resumed from a session ticket, failed.")
        let handshakes = value(segment, .tlsHandshakes), resumed = value(segment, .tlsResumed)
        sample("clusterd_tls_handshakes_total", "result=\"full\"", handshakes &- resumed)
        sample("clusterd_tls_handshakes_total", "result=\"resumed\"", resumed)
        sample("clusterd_tls_handshakes_total", "result=\"failed\"", value(segment, .tlsHandshakeFailures))
        family("clusterd_tls_kernel_send_total", "counter", "TLS connections whose sending the kernel encrypts (kTLS).")
        sample("clusterd_tls_kernel_send_total", "", value(segment, .tlsKernelSend))
        family("clusterd_tls_record_layer", "gauge", "Live workers with TLS listeners by record layer: openssl (user space) or kernel (kTLS offered).")
        sample("clusterd_tls_record_layer", "layer=\"openssl\"", UInt64(workers.filter { $0[.tlsRecordLayer] == 1 }.count))
        sample("clusterd_tls_record_layer", "layer=\"kernel\"", UInt64(workers.filter { $0[.tlsRecordLayer] == 2 }.count))
        family("clusterd_connections_lost_total", "counter", "Connections open on workers that crashed.")
        sample("clusterd_connections_lost_total", "", master[.lostWithCrashedWorkers])

        family("clusterd_access_log_dropped_lines_total", "counter", "Access log lines dropped because the file could not take them (a full disk).")
        sample("clusterd_access_log_dropped_lines_total", "", value(segment, .accessLogDroppedLines))

        family("clusterd_busy_polls_total", "counter", "Polls for the next event before sleeping (busyPoll), by whether one came in the window.")
        sample("clusterd_busy_polls_total", "result=\"event\"", value(segment, .busyPollHits))
        sample("clusterd_busy_polls_total", "result=\"timeout\"", value(segment, .busyPollMisses))

        family("clusterd_request_duration_seconds", "histogram", "From a request's first byte to its answer handed to the kernel.")
        var cumulative: UInt64 = 0
        for (i, bound) in StatsSlot.latencyBoundsMicros.enumerated() {
            cumulative &+= value(segment, StatsSlot.Field(rawValue: StatsSlot.Field.latency0.rawValue + i)!)
            sample("clusterd_request_duration_seconds_bucket", "le=\"\(seconds(bound))\"", cumulative)
        }
        cumulative &+= value(segment, .latencyOver)
        sample("clusterd_request_duration_seconds_bucket", "le=\"+Inf\"", cumulative)
        out += "clusterd_request_duration_seconds_sum \(seconds(value(segment, .latencySumMicros)))\n"
        sample("clusterd_request_duration_seconds_count", "", cumulative)

        family("clusterd_workers", "gauge", "Workers the serving generation should have.")
        sample("clusterd_workers", "", master[.workers])
        family("clusterd_generation", "gauge", "The serving generation.")
        sample("clusterd_generation", "", master[.generation])
        family("clusterd_reloads_total", "counter", "Completed reloads.")
        sample("clusterd_reloads_total", "", master[.reloads])
        family("clusterd_reload_failures_total", "counter", "Reloads that failed (the old generation kept serving).")
        sample("clusterd_reload_failures_total", "", master[.failedReloads])
        family("clusterd_worker_restarts_total", "counter", "Workers restarted after a crash or a missed heartbeat.")
        sample("clusterd_worker_restarts_total", "", master[.restarts])

        // Per worker slot, not per process: a slot keeps its series across restarts and reloads
        // (a new worker's counters start again at 0, which Prometheus reads as a counter reset).
        // While a reload drains, a slot has two workers (old and new generation): their numbers
        // are summed, and the state is the newest's.
        let slots = bySlot(workers)
        family("clusterd_worker_requests_total", "counter", "Requests answered, per worker slot (by its live workers).")
        for (slot, ws) in slots { sample("clusterd_worker_requests_total", "slot=\"\(slot)\"", ws.reduce(0) { $0 &+ $1[.requests] }) }
        family("clusterd_worker_connections_open", "gauge", "Open connections, per worker slot.")
        for (slot, ws) in slots { sample("clusterd_worker_connections_open", "slot=\"\(slot)\"", ws.reduce(0) { $0 &+ $1[.openConnections] }) }
        family("clusterd_worker_tls_resumed_total", "counter", "TLS handshakes resumed from a session ticket, per worker slot (tickets are shared: any worker resumes any session).")
        for (slot, ws) in slots { sample("clusterd_worker_tls_resumed_total", "slot=\"\(slot)\"", ws.reduce(0) { $0 &+ $1[.tlsResumed] }) }
        family("clusterd_worker_state", "gauge", "0 starting, 1 ready, 2 draining: the newest worker of each slot.")
        for (slot, ws) in slots { sample("clusterd_worker_state", "slot=\"\(slot)\"", ws.last.map { $0[.state] } ?? 0) }
        family("clusterd_worker_info", "gauge", "One per live worker process: its slot, pid and generation (changes on every restart and reload).")
        for (slot, ws) in slots {
            for w in ws { sample("clusterd_worker_info", "slot=\"\(slot)\",pid=\"\(w[.pid])\",generation=\"\(w[.generation])\"", 1) }
        }
        return out
    }

    /// Live workers grouped by slot, slots ascending, each slot's workers oldest generation first.
    static func bySlot(_ workers: [StatsSlot]) -> [(slot: UInt64, workers: [StatsSlot])] {
        var groups: [UInt64: [StatsSlot]] = [:]
        for w in workers { groups[w[.slot], default: []].append(w) }
        return groups.sorted { $0.key < $1.key }.map { ($0.key, $0.value.sorted { $0[.generation] < $1[.generation] }) }
    }

    static func seconds(_ micros: UInt64) -> String {
        let whole = micros / 1_000_000
        var frac = String(micros % 1_000_000)
        frac = String(repeating: "0", count: 6 - frac.count) + frac
        while frac.hasSuffix("0") { frac.removeLast() }
        return frac.isEmpty ? "\(whole)" : "\(whole).\(frac)"
    }
}
