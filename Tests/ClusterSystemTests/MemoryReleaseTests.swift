import ClusterSystem
import Glibc
import Testing

/// Serialized: the schedule tests release this whole process's clean pages, which would race the
/// pagemap checks of `releasesOnlyCleanFilePages`.
@Suite(.serialized) struct MemoryReleaseTests {
    @Test func parsesProcMaps() {
        let text = """
            55b4a1877000-55b4a1edc000 r-xp 00000000 fe:00 5317373                    /usr/bin/clusterd
            55b4a1f0a000-55b4a201e000 rw-p 00692000 fe:00 5317373                    /usr/bin/clusterd
            7fabcc1c0000-7fabcc1cb000 r--p 00000000 fe:00 1234                       /tmp/a file (deleted)
            7ffd0e9f1000-7ffd0e9f3000 r-xp 00000000 00:00 0                          [vdso]
            7f0000000000-7f0000001000 r--s 00000000 00:01 77                         /memfd:clusterd-stats (deleted)
            7f0000002000-7f0000003000 ---p 00000000 00:00 0
            garbage line
            """
        let maps = MemoryRelease.parseMaps(Array(text.utf8))
        #expect(maps.count == 6)
        #expect(maps[0].start == 0x55b4a1877000 && maps[0].end == 0x55b4a1edc000)
        #expect(maps[0].readable && !maps[0].writable && maps[0].executable && maps[0].isPrivate)
        #expect(maps[0].path == "/usr/bin/clusterd")
        #expect(maps[4].writable == false && maps[4].isPrivate == false)
        #expect(maps[2].path == "/tmp/a file (deleted)")
        #expect(maps.map(\.isCandidate) == [true, false, true, false, false, false])
    }

    /// A clean read-only private file mapping is released; a page made private by a write before
    /// the mapping went read-only (what RELRO does to relocated data) is kept, and both still read
    /// what they should afterwards.
    @Test func releasesOnlyCleanFilePages() throws {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        var template = Array("/tmp/clusterd-memtest-XXXXXX".utf8CString)
        let fd = mkstemp(&template)
        #expect(fd >= 0)
        defer { Sys.close(fd); unlink(template) }
        var bytes = [UInt8](repeating: 0, count: 4 * page)
        for i in 0..<4 { bytes[i * page] = UInt8(0x40 + i) }
        try FileIO.writeAll(fd: fd, bytes)

        let clean = mmap(nil, 4 * page, PROT_READ, MAP_PRIVATE, fd, 0)!
        #expect(clean != MAP_FAILED)
        let relocated = mmap(nil, 4 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0)!
        #expect(relocated != MAP_FAILED)
        defer { munmap(clean, 4 * page); munmap(relocated, 4 * page) }
        var sum = 0
        for i in 0..<4 {
            sum += Int(clean.load(fromByteOffset: i * page, as: UInt8.self))
            sum += Int(relocated.load(fromByteOffset: i * page, as: UInt8.self))
        }
        #expect(sum == 2 * (0x40 + 0x41 + 0x42 + 0x43))
        relocated.storeBytes(of: 0x99, toByteOffset: page, as: UInt8.self)
        #expect(mprotect(relocated, 4 * page, PROT_READ) == 0)

        func planned(_ base: UnsafeMutableRawPointer) throws -> [UInt] {
            let lo = UInt(bitPattern: base), hi = lo + UInt(4 * page)
            var pages: [UInt] = []
            for r in try MemoryRelease.plan().ranges where r.start < hi && r.start + r.length > lo {
                var p = max(r.start, lo)
                while p < min(r.start + r.length, hi) { pages.append((p - lo) / UInt(page)); p += UInt(page) }
            }
            return pages
        }
        #expect(try planned(clean) == [0, 1, 2, 3])
        #expect(try planned(relocated) == [0, 2, 3])

        // Release only this test's pages: the test process has other threads.
        var plan = try MemoryRelease.plan()
        let ours = [UInt(bitPattern: clean), UInt(bitPattern: relocated)]
        plan.ranges = plan.ranges.filter { r in ours.contains { r.start >= $0 && r.start < $0 + UInt(4 * page) } }
        try MemoryRelease.release(plan)
        #expect(try planned(clean) == [])
        #expect(try planned(relocated) == [])
        #expect(clean.load(fromByteOffset: 2 * page, as: UInt8.self) == 0x42)
        #expect(relocated.load(fromByteOffset: page, as: UInt8.self) == 0x99)
        #expect(relocated.load(fromByteOffset: 3 * page, as: UInt8.self) == 0x43)
    }

    @Test func releasesOncePerQuietSpell() throws {
        var schedule = MemoryRelease.IdleSchedule(after: 1000, singleThreadedOnly: false)
        try schedule.turn(now: 500, busy: false)
        #expect(schedule.releases == 0)
        try schedule.turn(now: 1000, busy: false)  // start counts as the last busy moment
        #expect(schedule.releases == 1)
        try schedule.turn(now: 5000, busy: false)
        #expect(schedule.releases == 1)  // once per quiet spell
        try schedule.turn(now: 5100, busy: true)
        try schedule.turn(now: 6000, busy: false)
        #expect(schedule.releases == 1)
        try schedule.turn(now: 6100, busy: false)
        #expect(schedule.releases == 2)
        #expect(!schedule.failed)
    }

    @Test func zeroMeansNever() throws {
        var schedule = MemoryRelease.IdleSchedule(after: 0, singleThreadedOnly: false)
        try schedule.turn(now: 1_000_000, busy: false)
        try schedule.releaseNow()
        #expect(schedule.releases == 0)
    }

    /// At ready: released at once, and the first quiet spell still releases again.
    @Test func releaseNowLeavesTheQuietSpellAlone() throws {
        var schedule = MemoryRelease.IdleSchedule(after: 1000, singleThreadedOnly: false)
        try schedule.releaseNow()
        #expect(schedule.releases == 1)
        try schedule.turn(now: 1000, busy: false)
        #expect(schedule.releases == 2)
    }

    /// The test process has several threads: a schedule that requires one thread does nothing.
    @Test func skipsWhileOtherThreadsRun() throws {
        #expect((MemoryRelease.threadCount() ?? 0) >= 1)
        var schedule = MemoryRelease.IdleSchedule(after: 1000)
        try schedule.releaseNow()
        #expect(schedule.releases == (MemoryRelease.threadCount() == 1 ? 1 : 0))
    }
}
