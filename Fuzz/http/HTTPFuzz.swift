// libFuzzer target over ClusterHTTP: the request parser, the chunked decoder and the connection
// state machine, fed whatever bytes the fuzzer makes. Built by `make fuzz` (scripts/fuzz.sh) over
// ClusterHTTP as its own module: swiftc -sanitize=fuzzer,address. What one input runs and the
// invariants it checks are in HTTPFuzzDriver.swift, which the unit tests share.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    HTTPFuzzDriver.run(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}
