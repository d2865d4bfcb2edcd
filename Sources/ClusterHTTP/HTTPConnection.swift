/// Counters a connection adds to as it answers requests (the worker folds them into its stats slot).
public struct HTTPCounters: Sendable, Equatable {
    public var requests = 0
    /// Responses by status class: index 1 = 1xx ... 5 = 5xx.
    public var statusClasses: (Int, Int, Int, Int, Int, Int) = (0, 0, 0, 0, 0, 0)
    public var parseErrors = 0

    public init() {}

    @inlinable
    public mutating func count(status: Int) {
        switch status / 100 {
        case 1: statusClasses.1 += 1
        case 2: statusClasses.2 += 1
        case 3: statusClasses.3 += 1
        case 4: statusClasses.4 += 1
        default: statusClasses.5 += 1
        }
    }

    public static func == (a: HTTPCounters, b: HTTPCounters) -> Bool {
        a.requests == b.requests && a.parseErrors == b.parseErrors && a.statusClasses == b.statusClasses
    }
}

/// The HTTP/1.1 state of one connection: bytes in, responses out, no syscalls. The worker owns the
/// socket and buffers; this decides what the bytes mean. Everything needed to carry on serving a
/// connection elsewhere is this value plus the unparsed input bytes.
public struct HTTPConnectionState {
    /// What the connection is waiting for; the worker maps it to a timeout.
    public enum Phase: Equatable, Sendable {
        /// Between requests, nothing buffered: keep-alive timeout.
        case idle
        /// Part of a request head received: header timeout.
        case head
        /// Head done, body in progress: body timeout.
        case body
        /// Done; close once the output is flushed.
        case closing
        /// A request was answered with `respondLater`: its answer is being worked out (no timeout;
        /// nothing more is read until it is written, `complete`).
        case awaiting
    }

    public enum Outcome: Equatable, Sendable {
        /// The handler deferred its answer (`respondLater`): take `deferredWork`, run it, and give
        /// what it returns to `complete`. Until then the connection reads nothing more.
        case suspended
        /// A body streamed to the handler (`HTTPHandler.streamsBody`) holds more unread bytes than
        /// `RequestBodyStream.highWater`: read nothing more until the handler takes some
        /// (`requestBodyIsFull` turns false), then call `process` again.
        case bodyFull
        /// Everything complete was answered; read more.
        case needInput
        /// Output grew past the pipelining bound: flush it, then call `process` again.
        case flushFirst
        /// Flush the output, then close.
        case close
    }

    struct BodyProgress: Sendable {
        var head: HTTPRequestHead
        var decoder: ChunkedDecoder?
        var raw: Int
        var decoded: Int
        /// A `100 Continue` was sent, or is no longer due because body bytes arrived (they may
        /// since have been dropped as framing, so this is remembered rather than looked at again).
        var continueSettled = false
    }

    /// A request whose answer is deferred: what writing it needs. Its bytes stay at the start of
    /// the input, its fields in `savedHeaders`, until then (the access log reads them).
    struct Awaiting: Sendable {
        var head: HTTPRequestHead
        var body: ByteSpan
        var consumed: Int
        var keepAlive: Bool
        /// A streamed answer's head is written: its status and how its body is framed.
        var streaming: (status: Int, chunked: Bool, keepAlive: Bool)? = nil
        var streamedBytes = 0
    }

    /// A body going to the handler as it arrives (`HTTPHandler.streamsBody`), whose answer is
    /// deferred. Its bytes are removed from the input as they are handed over; the head stays.
    struct StreamingBody: Sendable {
        var head: HTTPRequestHead
        var decoder: ChunkedDecoder?
        /// Content-Length bytes still to come (a chunked body: unused).
        var remaining: Int
        /// Chunked: where decoding stands in the input (see `ChunkedDecoder.decode`).
        var raw: Int
        var decoded: Int
        var keepAlive: Bool
    }

    enum State: Sendable {
        case idle
        case head(HeadScanState)
        case body(BodyProgress)
        case closing
        case awaiting(Awaiting)
        case streamingBody(StreamingBody)
    }

    var state: State = .idle
    /// A file body to send (after the output bytes) before anything else happens on the connection.
    public var pendingFile: FileBody? = nil
    /// The work of a deferred answer, from the request `process` stopped at (`.suspended`); the
    /// worker takes it (and sets it to nil) to run it.
    public var deferredWork: DeferredResponse? = nil
    /// The stream of a body going to the handler as it arrives (`.streamingBody`), else nil. Kept
    /// out of `State`, whose values are plain data: copying one costs no reference counting.
    var bodyStream: RequestBodyStream? = nil
    /// The fields of a head whose body spans reads (allocated at the first such request).
    var savedHeaders: SavedHeaders? = nil
    /// Requests answered on this connection.
    public private(set) var requestsServed = 0
    /// Under `ResponseContext.answerOnlyWhatHasArrived`: bytes of input, counted from the start of
    /// the request being answered, that had arrived when the first answer went out; the requests
    /// beginning in them are answered, none after (-1: not set yet).
    var bytesLeftToAnswer = -1

    public init() {}

    public var phase: Phase {
        switch state {
        case .idle: return .idle
        case .head: return .head
        case .body: return .body
        case .closing: return .closing
        case .awaiting: return .awaiting
        case .streamingBody: return .body
        }
    }

    /// A deferred answer is being worked out (its body may still be arriving).
    public var awaitsAnswer: Bool {
        switch state {
        case .awaiting, .streamingBody: return true
        default: return false
        }
    }

    /// The body being handed to the handler as it arrives, if any.
    public var requestBodyStream: RequestBodyStream? { bodyStream }

    /// The handler has not taken enough of a streamed body: read no more from the connection.
    public var requestBodyIsFull: Bool { requestBodyStream?.isFull ?? false }

    /// Fails a body being streamed to the handler (the connection ends, a timeout).
    public mutating func interruptBody(_ reason: String) {
        guard let stream = bodyStream else { return }
        stream.fail(reason)
        bodyStream = nil
    }

    /// Whether a request is partly received (nothing may be cut short by closing now).
    public var isMidRequest: Bool {
        switch state {
        case .head, .body, .awaiting, .streamingBody: return true
        default: return false
        }
    }

    /// Answers every complete request in `input` (consuming it) into `output`, in order.
    public mutating func process<H: HTTPHandler>(
        _ input: IOBuffer, output: IOBuffer, parser: HTTPParser, context: ResponseContext,
        handler: H, counters: inout HTTPCounters
    ) -> Outcome {
        var observer = NoObserver()
        return process(input, output: output, parser: parser, context: context, handler: handler, counters: &counters, observer: &observer)
    }

    /// `process` that reports each answered request to `observer`. When a response has a file body,
    /// it stops after that response (`flushFirst`, or `close`) with `pendingFile` set.
    public mutating func process<H: HTTPHandler, O: HTTPObserver>(
        _ input: IOBuffer, output: IOBuffer, parser: HTTPParser, context: ResponseContext,
        handler: H, counters: inout HTTPCounters, observer: inout O
    ) -> Outcome {
        precondition(pendingFile == nil, "send the pending file before processing more")
        while true {
            switch state {
            case .closing:
                return .close
            case .awaiting:
                return .suspended
            case .streamingBody:
                switch feedBody(input, parser) {
                case .more: return requestBodyIsFull ? .bodyFull : .needInput
                case .done: return .suspended  // the answer is still to come: read nothing more
                case .failed(let error): return fail(error, output, context, &counters, &observer)
                }
            case .idle:
                // RFC 9112 §2.2: ignore empty lines before a request-line.
                while input.readableBytes >= 2 {
                    let v = input.readableView
                    guard v[0] == 0x0D && v[1] == 0x0A else { break }
                    input.moveReaderIndex(forwardBy: 2)
                }
                if input.readableBytes == 0 { return .needInput }
                if input.readableView[0] == 0x0A { return fail(.bareLF, output, context, &counters, &observer) }
                if input.readableBytes == 1 && input.readableView[0] == 0x0D { return .needInput }
                state = .head(HeadScanState())
            case .head(var scan):
                let result = parser.parseHead(input.readableView, scan: &scan)
                switch result {
                case .incomplete:
                    state = .head(scan)
                    return .needInput
                case .failed(let error):
                    return fail(error, output, context, &counters, &observer)
                case .complete(let head):
                    if head.hasBody && handler.streamsBody(HTTPRequest(
                        head: head, base: UnsafeRawBufferPointer(rebasing: input.readableView[0..<head.headLength]), fields: parser.headers(head.headerCount),
                        body: .empty, socket: context.socket, proxiedClient: context.proxiedClient, forwardingTrust: context.forwardingTrust)) {
                        return dispatchStreaming(head, input, output, parser, context, handler, &counters, &observer)
                    }
                    if head.contentLength > parser.limits.maxBodyBytes { return fail(.bodyTooLarge, output, context, &counters, &observer) }
                    if head.hasBody {
                        let decoder: ChunkedDecoder? = head.isChunked ? ChunkedDecoder() : nil
                        state = .body(BodyProgress(head: head, decoder: decoder, raw: head.headLength, decoded: head.headLength))
                        if let outcome = continueBody(input, output, parser, context, handler, &counters, &observer, headIsFresh: true) { return outcome }
                    } else {
                        if let outcome = dispatch(head, fields: parser.headers(head.headerCount), body: .empty, consumed: head.headLength, input, output, parser, context, handler, &counters, &observer) {
                            return outcome
                        }
                    }
                }
            case .body:
                if let outcome = continueBody(input, output, parser, context, handler, &counters, &observer, headIsFresh: false) { return outcome }
            }
        }
    }

    /// Moves the body on with what is buffered. Returns nil when a request was answered and the loop
    /// should go on.
    mutating func continueBody<H: HTTPHandler, O: HTTPObserver>(
        _ input: IOBuffer, _ output: IOBuffer, _ parser: HTTPParser, _ context: ResponseContext,
        _ handler: H, _ counters: inout HTTPCounters, _ observer: inout O, headIsFresh: Bool
    ) -> Outcome? {
        guard case .body(var progress) = state else { return nil }
        let available = input.readableBytes
        if var decoder = progress.decoder {
            let base = input.baseAddress! + input.readerIndex
            let result = decoder.decode(
                base, raw: &progress.raw, end: available, decoded: &progress.decoded, bodyStart: progress.head.headLength,
                maxBody: parser.limits.maxBodyBytes, maxTrailerBytes: parser.limits.maxHeaderBytes,
                maxExtensionBytes: parser.limits.maxChunkExtensionBytes)
            progress.decoder = decoder
            switch result {
            case .failed(let error):
                return fail(error, output, context, &counters, &observer)
            case .needMore:
                sendContinueIfExpected(&progress, output, bodyBytesSeen: available > progress.head.headLength)
                // The framing decoded so far is dead: drop it, so that the buffer holds the head and
                // the decoded body only (`HTTPLimits.maxInputBufferBytes`), not every chunk line
                // since the body began.
                input.removeReadable(from: progress.decoded, upTo: progress.raw)
                progress.raw = progress.decoded
                state = .body(progress)
                if headIsFresh { saveHeaders(parser, progress.head) }
                return .needInput
            case .done:
                let span = ByteSpan(start: progress.head.headLength, count: progress.decoded - progress.head.headLength)
                return dispatch(progress.head, fields: fields(parser, progress.head, headIsFresh), body: span, consumed: progress.raw, input, output, parser, context, handler, &counters, &observer)
            }
        } else {
            let total = progress.head.headLength + progress.head.contentLength
            if available < total {
                sendContinueIfExpected(&progress, output, bodyBytesSeen: available > progress.head.headLength)
                state = .body(progress)
                if headIsFresh { saveHeaders(parser, progress.head) }
                return .needInput
            }
            let span = ByteSpan(start: progress.head.headLength, count: progress.head.contentLength)
            return dispatch(progress.head, fields: fields(parser, progress.head, headIsFresh), body: span, consumed: total, input, output, parser, context, handler, &counters, &observer)
        }
    }

    /// The body is still to come: keep the head's fields, which the next parse (any connection's)
    /// overwrites in the parser's table.
    mutating func saveHeaders(_ parser: HTTPParser, _ head: HTTPRequestHead) {
        let saved = savedHeaders ?? SavedHeaders()
        saved.save(parser.headers(head.headerCount))
        savedHeaders = saved
    }

    /// The header fields of the request about to be dispatched: still in the parser's table when
    /// the whole request came in one read, else the copy `saveHeaders` made.
    func fields(_ parser: HTTPParser, _ head: HTTPRequestHead, _ headIsFresh: Bool) -> UnsafeBufferPointer<HTTPHeaderSpan> {
        if headIsFresh { return parser.headers(head.headerCount) }
        guard let saved = savedHeaders, saved.count == head.headerCount else { preconditionFailure("a head whose body spans reads has its fields saved") }
        return saved.fields
    }

    func sendContinueIfExpected(_ progress: inout BodyProgress, _ output: IOBuffer, bodyBytesSeen: Bool) {
        guard !progress.continueSettled else { return }
        if bodyBytesSeen {
            progress.continueSettled = true
        } else if progress.head.expectContinue && progress.head.versionMinor >= 1 {
            output.write("HTTP/1.1 100 Continue\r\n\r\n")
            progress.continueSettled = true
        }
    }

    mutating func dispatch<H: HTTPHandler, O: HTTPObserver>(
        _ head: HTTPRequestHead, fields: UnsafeBufferPointer<HTTPHeaderSpan>, body: ByteSpan, consumed: Int, _ input: IOBuffer, _ output: IOBuffer,
        _ parser: HTTPParser, _ context: ResponseContext, _ handler: H, _ counters: inout HTTPCounters, _ observer: inout O
    ) -> Outcome? {
        requestsServed += 1
        counters.requests += 1
        let limits = parser.limits
        // Closing connections (a stop): every request the client already sent is answered, so a
        // request followed by more bytes in the buffer (pipelined) keeps the connection; the last
        // one says `Connection: close`.
        // Over the cap (`answerOnlyWhatHasArrived`): only what had begun to arrive by the first
        // answer, so a client that never stops pipelining cannot hold the connection.
        var moreToAnswer = input.readableBytes > consumed
        if context.closeConnections && context.answerOnlyWhatHasArrived {
            if bytesLeftToAnswer < 0 { bytesLeftToAnswer = input.readableBytes }
            bytesLeftToAnswer = max(0, bytesLeftToAnswer - consumed)
            moreToAnswer = moreToAnswer && bytesLeftToAnswer > 0
        }
        let keepAlive = limits.keepAlive && head.wantsKeepAlive && (!context.closeConnections || moreToAnswer)
            && (limits.maxKeepAliveRequests == 0 || requestsServed < limits.maxKeepAliveRequests)
        let request = HTTPRequest(head: head, base: UnsafeRawBufferPointer(rebasing: input.readableView[0..<consumed]), fields: fields, body: body, socket: context.socket,
                                  proxiedClient: context.proxiedClient, forwardingTrust: context.forwardingTrust)
        var writer = HTTPResponseWriter(output: output, dateLine: context.dateLine, isHead: head.method == .HEAD, versionMinor: head.versionMinor, keepAlive: keepAlive)
        if head.method == .OPTIONS && head.path.count == 0 {
            writer.respondToServerOptions(allow: handler.allowedMethods)
        } else {
            handler.handle(request, &writer)
        }
        if let work = writer.deferred {
            // Answered later (`complete`): the request's bytes stay in the input and its fields are
            // kept until then, for the access log.
            if savedHeaders == nil || savedHeaders!.fields.baseAddress != fields.baseAddress {
                let saved = savedHeaders ?? SavedHeaders()
                saved.save(fields)
                savedHeaders = saved
            }
            deferredWork = work
            state = .awaiting(Awaiting(head: head, body: body, consumed: consumed, keepAlive: keepAlive))
            return .suspended
        }
        if !writer.hasResponded {
            writer.keepAlive = false
            writer.respond(status: 500, body: "handler did not respond\n" as StaticString)
        }
        let (status, keep, bodyBytes, file) = (writer.status, writer.keepAlive, writer.bodyBytes, writer.fileBody)
        counters.count(status: status)
        observer.completed(request, status: status, bodyBytes: bodyBytes)
        input.moveReaderIndex(forwardBy: consumed)
        pendingFile = file
        if !keep {
            state = .closing
            return .close
        }
        state = .idle
        if file != nil || output.readableBytes > limits.maxPendingOutput { return .flushFirst }
        return nil
    }

    /// A request whose handler streams its body: calls the handler now, with the body to come in
    /// `request.bodyStream`, and hands over what is already buffered of it.
    mutating func dispatchStreaming<H: HTTPHandler, O: HTTPObserver>(
        _ head: HTTPRequestHead, _ input: IOBuffer, _ output: IOBuffer, _ parser: HTTPParser, _ context: ResponseContext,
        _ handler: H, _ counters: inout HTTPCounters, _ observer: inout O
    ) -> Outcome {
        requestsServed += 1
        counters.requests += 1
        let limits = parser.limits
        let keepAlive = limits.keepAlive && head.wantsKeepAlive && !context.closeConnections
            && (limits.maxKeepAliveRequests == 0 || requestsServed < limits.maxKeepAliveRequests)
        let fields = parser.headers(head.headerCount)
        let stream = RequestBodyStream(expectedLength: head.isChunked ? nil : head.contentLength)
        let request = HTTPRequest(head: head, base: UnsafeRawBufferPointer(rebasing: input.readableView[0..<head.headLength]), fields: fields, body: .empty,
                                  socket: context.socket, proxiedClient: context.proxiedClient, forwardingTrust: context.forwardingTrust, bodyStream: stream)
        // An answer written now (before the body is read) closes the connection; a deferred one
        // keeps `keepAlive`.
        var writer = HTTPResponseWriter(output: output, dateLine: context.dateLine, isHead: head.method == .HEAD, versionMinor: head.versionMinor, keepAlive: false)
        handler.handle(request, &writer)
        let saved = savedHeaders ?? SavedHeaders()
        saved.save(fields)
        savedHeaders = saved
        if let work = writer.deferred {
            if head.expectContinue && head.versionMinor >= 1 && input.readableBytes == head.headLength {
                output.write("HTTP/1.1 100 Continue\r\n\r\n")
            }
            deferredWork = work
            bodyStream = stream
            state = .streamingBody(StreamingBody(head: head, decoder: head.isChunked ? ChunkedDecoder() : nil, remaining: head.isChunked ? 0 : head.contentLength,
                                                 raw: head.headLength, decoded: head.headLength, keepAlive: keepAlive))
            if case .failed(let error) = feedBody(input, parser) { return fail(error, output, context, &counters, &observer) }
            return .suspended
        }
        // Answered at once, before its body was read: the connection closes after the answer (the
        // worker reads and drops the rest of the body meanwhile, a lingering close).
        stream.fail("answered before the body was read")
        if !writer.hasResponded { writer.respond(status: 500, body: "handler did not respond\n" as StaticString) }
        counters.count(status: writer.status)
        observer.completed(request, status: writer.status, bodyBytes: writer.bodyBytes)
        input.moveReaderIndex(forwardBy: head.headLength)
        pendingFile = writer.fileBody
        state = .closing
        return .close
    }

    enum Feed { case more, done, failed(HTTPError) }

    /// Hands what is buffered of a streamed body to its stream (unless the handler has not taken
    /// enough yet), removing it from the input. At the body's end the request awaits its answer.
    mutating func feedBody(_ input: IOBuffer, _ parser: HTTPParser) -> Feed {
        guard case .streamingBody(var s) = state, let stream = bodyStream, !stream.isFull else { return .more }
        let start = s.head.headLength
        let available = input.readableBytes
        var done = false
        if var decoder = s.decoder {
            guard available > s.raw else { return .more }
            let result = decoder.decode(
                input.baseAddress! + input.readerIndex, raw: &s.raw, end: available, decoded: &s.decoded, bodyStart: start, maxBody: Int.max,
                maxTrailerBytes: parser.limits.maxHeaderBytes, maxExtensionBytes: parser.limits.maxChunkExtensionBytes)
            s.decoder = decoder
            if s.decoded > start { stream.push(Array(input.readableView[start..<s.decoded])) }
            input.removeReadable(from: start, upTo: s.raw)
            s.raw = start
            s.decoded = start
            switch result {
            case .failed(let error):
                stream.fail(error.reason)
                bodyStream = nil
                state = .streamingBody(s)
                return .failed(error)
            case .done: done = true
            case .needMore: break
            }
        } else {
            let n = min(available - start, s.remaining)
            if n > 0 {
                stream.push(Array(input.readableView[start..<(start + n)]))
                input.removeReadable(from: start, upTo: start + n)
                s.remaining -= n
            }
            done = s.remaining == 0
        }
        guard done else {
            state = .streamingBody(s)
            return .more
        }
        stream.finish()
        bodyStream = nil
        state = .awaiting(Awaiting(head: s.head, body: .empty, consumed: start, keepAlive: s.keepAlive))
        return .done
    }

    /// Writes the deferred answer of the request `process` stopped at, then goes on with what the
    /// client pipelined behind it. A stop that began meanwhile (`closeConnections`) closes the
    /// connection after it unless more requests are already buffered.
    public mutating func complete<H: HTTPHandler, O: HTTPObserver>(
        with response: HTTPResponse, _ input: IOBuffer, output: IOBuffer, parser: HTTPParser, context: ResponseContext,
        handler: H, counters: inout HTTPCounters, observer: inout O
    ) -> Outcome {
        stopStreamingBody()
        guard case .awaiting(let a) = state, let saved = savedHeaders, saved.count == a.head.headerCount, input.readableBytes >= a.consumed else {
            state = .closing
            return .close
        }
        let keepAlive = a.keepAlive && (!context.closeConnections || input.readableBytes > a.consumed)
        var writer = HTTPResponseWriter(output: output, dateLine: context.dateLine, isHead: a.head.method == .HEAD, versionMinor: a.head.versionMinor, keepAlive: keepAlive)
        writer.respond(response)
        return answered(a, saved, status: writer.status, bodyBytes: writer.bodyBytes, keepAlive: writer.keepAlive,
                        input, output, parser, context, handler, &counters, &observer)
    }

    /// An answer that comes before the request's streamed body is all in: the rest of the body is
    /// not read (the worker drops it in a lingering close), and the connection closes after it.
    mutating func stopStreamingBody() {
        guard case .streamingBody(let s) = state else { return }
        interruptBody("answered before the body was read")
        state = .awaiting(Awaiting(head: s.head, body: .empty, consumed: s.head.headLength, keepAlive: false))
    }

    /// A deferred answer has been written: counts and reports its request, drops the request's
    /// bytes, and goes on with what the client pipelined behind it unless the connection closes.
    mutating func answered<H: HTTPHandler, O: HTTPObserver>(
        _ a: Awaiting, _ saved: SavedHeaders, status: Int, bodyBytes: Int, keepAlive: Bool, _ input: IOBuffer, _ output: IOBuffer,
        _ parser: HTTPParser, _ context: ResponseContext, _ handler: H, _ counters: inout HTTPCounters, _ observer: inout O
    ) -> Outcome {
        let request = HTTPRequest(head: a.head, base: UnsafeRawBufferPointer(rebasing: input.readableView[0..<a.consumed]), fields: saved.fields,
                                  body: a.body, socket: context.socket, proxiedClient: context.proxiedClient, forwardingTrust: context.forwardingTrust)
        counters.count(status: status)
        observer.completed(request, status: status, bodyBytes: bodyBytes)
        input.moveReaderIndex(forwardBy: a.consumed)
        guard keepAlive else {
            state = .closing
            return .close
        }
        state = .idle
        if output.readableBytes > parser.limits.maxPendingOutput { return .flushFirst }
        return process(input, output: output, parser: parser, context: context, handler: handler, counters: &counters, observer: &observer)
    }

    /// Writes the head of a streamed deferred answer (`HTTPResponse.stream`). Returns whether its
    /// body follows: then `writeChunk` for each piece and `finishStream`; else call `finishStream`
    /// at once.
    public mutating func beginStream(with response: HTTPResponse, input: IOBuffer, output: IOBuffer, context: ResponseContext) -> Bool {
        stopStreamingBody()
        guard case .awaiting(var a) = state, a.streaming == nil else { return false }
        let keepAlive = a.keepAlive && (!context.closeConnections || input.readableBytes > a.consumed)
        var writer = HTTPResponseWriter(output: output, dateLine: context.dateLine, isHead: a.head.method == .HEAD, versionMinor: a.head.versionMinor, keepAlive: keepAlive)
        let (bodyFollows, chunked) = writer.respondStreaming(response)
        a.streaming = (writer.status, chunked, writer.keepAlive)
        state = .awaiting(a)
        return bodyFollows
    }

    /// One piece of a streamed body, framed.
    public mutating func writeChunk(_ bytes: [UInt8], output: IOBuffer) {
        guard case .awaiting(var a) = state, let s = a.streaming, !bytes.isEmpty else { return }
        if s.chunked {
            output.writeHex(bytes.count)
            output.write("\r\n")
        }
        output.write(bytes)
        if s.chunked { output.write("\r\n") }
        a.streamedBytes += bytes.count
        state = .awaiting(a)
    }

    /// Ends a streamed answer (the last chunk), then goes on with what the client pipelined behind
    /// it, as `complete` does. `failed`: the body's closure threw: the body is cut short, and the
    /// connection closes without the last chunk (the client sees an incomplete response).
    public mutating func finishStream<H: HTTPHandler, O: HTTPObserver>(
        failed: Bool, _ input: IOBuffer, output: IOBuffer, parser: HTTPParser, context: ResponseContext,
        handler: H, counters: inout HTTPCounters, observer: inout O
    ) -> Outcome {
        guard case .awaiting(let a) = state, let s = a.streaming, let saved = savedHeaders, saved.count == a.head.headerCount,
              input.readableBytes >= a.consumed else {
            state = .closing
            return .close
        }
        if s.chunked && !failed { output.write("0\r\n\r\n") }
        return answered(a, saved, status: s.status, bodyBytes: a.streamedBytes, keepAlive: s.keepAlive && !failed,
                        input, output, parser, context, handler, &counters, &observer)
    }

    mutating func fail<O: HTTPObserver>(_ error: HTTPError, _ output: IOBuffer, _ context: ResponseContext, _ counters: inout HTTPCounters, _ observer: inout O) -> Outcome {
        counters.parseErrors += 1
        observer.rejected(error)
        counters.count(status: error.status)
        HTTPResponseWriter.writeError(output, error, dateLine: context.dateLine)
        state = .closing
        return .close
    }

    /// Answers a request that timed out (408) with an error response and marks the connection
    /// closing. An idle connection (no request started) just closes: nothing is written.
    public mutating func abandon(with error: HTTPError, output: IOBuffer, context: ResponseContext) {
        interruptBody(error.reason)
        if isMidRequest { HTTPResponseWriter.writeError(output, error, dateLine: context.dateLine) }
        state = .closing
    }
}
