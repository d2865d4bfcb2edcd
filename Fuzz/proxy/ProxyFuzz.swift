// libFuzzer target over ClusterHTTP's PROXY protocol parser (ProxyProtocol.swift), fed whatever
// bytes the fuzzer makes as a connection's first bytes. Built by `make fuzz` (scripts/fuzz.sh) over
// ClusterHTTP as its own module: swiftc -sanitize=fuzzer,address. What one input runs and the
// invariants it checks are in ProxyFuzzDriver.swift, which the unit tests share.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    ProxyFuzzDriver.run(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}
