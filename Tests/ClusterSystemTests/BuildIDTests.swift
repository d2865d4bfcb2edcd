import Testing

@testable import ClusterSystem

/// The build ID a master and its workers compare, and `clusterctl status` reads from the file on disk.
@Suite struct BuildIDs {
    @Test func theRunningImageAndItsFileAgree() throws {
        // The test binary is linked like clusterd (gold writes a build ID by default on Linux).
        let running = try #require(BuildID.current)
        #expect(running.bytes.count >= 8)
        #expect(try BuildID.ofFile(path: "/proc/self/exe") == running)
    }

    @Test func hexRoundTrips() {
        let id = BuildID(bytes: [0x00, 0x7f, 0xab, 0xff])
        #expect(id.description == "007fabff")
        #expect(BuildID(hex: "007fabff") == id)
        for bad in ["", "0", "xyz0", "007FABFF", String(repeating: "ab", count: 65)] {
            #expect(BuildID(hex: bad) == nil, "\(bad)")
        }
    }

    @Test func aFileThatIsNotELFIsAnErrorAndANoteTableIsBoundsChecked() throws {
        #expect(throws: SystemError.self) { try BuildID.ofFile(path: "/proc/self/status") }
        #expect(throws: SystemError.self) { try BuildID.ofFile(path: "/nonexistent/clusterd") }
        // Note tables cut short or with sizes past their end end the search; no trap.
        var notes: [UInt8] = [4, 0, 0, 0, 4, 0, 0, 0, 3, 0, 0, 0] + Array("GNU\0".utf8) + [1, 2, 3, 4]
        #expect(BuildID.parseNotes(notes) == BuildID(bytes: [1, 2, 3, 4]))
        for cut in 0..<notes.count { _ = BuildID.parseNotes(Array(notes[..<cut])) }
        notes[4] = 0xff; notes[5] = 0xff; notes[6] = 0xff; notes[7] = 0x7f
        #expect(BuildID.parseNotes(notes) == nil)
        #expect(BuildID.parseNotes([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 3, 0, 0, 0]) == nil)
    }
}

/// `"workers": "auto"` under a CPU limit (a pod's, a container's, systemd's `CPUQuota=`).
@Suite struct CPUQuota {
    @Test func cpuMaxIsReadAsWholeCPUsRoundedUp() {
        #expect(Sys.cpuCount(fromCPUMax: "max 100000\n") == nil, "no limit")
        #expect(Sys.cpuCount(fromCPUMax: "200000 100000\n") == 2)
        #expect(Sys.cpuCount(fromCPUMax: "250000 100000") == 3, "2.5 CPUs: 3 workers")
        #expect(Sys.cpuCount(fromCPUMax: "50000 100000") == 1)
        #expect(Sys.cpuCount(fromCPUMax: "150000\n 100000\n") == 2, "v1: cfs_quota_us and cfs_period_us")
        #expect(Sys.ancestry("/kubepods/pod1/c1") == ["/kubepods/pod1/c1", "/kubepods/pod1", "/kubepods", ""])
        #expect(Sys.ancestry("/") == [""])
        for bad in ["", "100000", "x 100000", "-1 100000", "100000 0", "1 2 3"] {
            #expect(Sys.cpuCount(fromCPUMax: bad) == nil, "\(bad)")
        }
    }

    @Test func theUsableCountIsAtMostTheAffinityMask() {
        #expect(Sys.usableCPUCount >= 1 && Sys.usableCPUCount <= Sys.allowedCPUs.count)
    }
}
