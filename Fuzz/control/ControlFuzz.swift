// libFuzzer target over the control plane: the control-request decoder (ClusterControl over
// ClusterJSON) and the master's command handling (MasterCore, a pure state machine), driven by
// ControlFuzzDriver. Built by `make fuzz` (scripts/fuzz.sh) with those modules compiled separately:
// swiftc -sanitize=fuzzer,address.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    ControlFuzzDriver.run(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}
