import ClusterControl
import ClusterJSON
import Testing

@Suite struct ControlProtocol {
    @Test func roundTrip() {
        for r in [ControlRequest.status, .workers, .scale(.absolute(16)), .scale(.relative(-2)), .scale(.absolute(3), wait: true), .scale(.relative(Int.max)), .reload(wait: true), .stop(graceful: false), .reopenLogs] {
            let line = Array(r.json.serialized.utf8)
            #expect(ControlRequest.decode(line) == .success(r))
        }
        #expect(ControlRequest.scale(.absolute(16)).json.serialized == #"{"v":1,"cmd":"scale","workers":16}"#)
    }

    @Test(arguments: [
        (#"{"v":1}"#, "missing \"cmd\""),
        (#"{"v":2,"cmd":"status"}"#, "unsupported protocol version 2 (this daemon speaks 1)"),
        (#"{"v":1,"cmd":"scale","workers":"x"}"#, "\"workers\" must be a whole number"),
        (#"{"v":1,"cmd":"scale","workers":2,"delta":1}"#, "scale needs exactly one of \"workers\" or \"delta\""),
        (#"{"v":1,"cmd":"status","extra":1}"#, "unknown field \"extra\" for status"),
        (#"[1]"#, "request must be a JSON object"),
        (#"{"v":1,"cmd":"scale","delta":1,"wait":1}"#, "\"wait\" must be true or false"),
        (#"{"v":1,"cmd":"scale","delta":9223372036854775808}"#, "\"delta\" must be a whole number"),
    ])
    func errors(_ line: String, _ message: String) {
        #expect(ControlRequest.decode(Array(line.utf8)) == .failure(ControlError(message)))
    }

    @Test func workerMessages() {
        #expect(WorkerToMaster.decode(WorkerToMaster.ready.encoded) == .ready)
        #expect(MasterToWorker.decode(MasterToWorker.drain.encoded) == .drain)
        #expect(MasterToWorker.decode(Array("nonsense".utf8)) == nil)
    }

    @Test func ticketKeysTravelAsBytes() {
        // Binary keys, any byte (a space, a NUL) included, 80 bytes each, 1 to 4 of them.
        let keys = (0..<160).map { UInt8($0 % 256) }
        #expect(MasterToWorker.decode(MasterToWorker.ticketKeys(keys).encoded) == .ticketKeys(keys))
        #expect(MasterToWorker.decode(Array("tickets ".utf8)) == nil)
        #expect(MasterToWorker.decode(Array("tickets ".utf8) + [UInt8](repeating: 1, count: 79)) == nil)
        #expect(MasterToWorker.decode(Array("tickets ".utf8) + [UInt8](repeating: 1, count: 5 * 80)) == nil)
    }
}
