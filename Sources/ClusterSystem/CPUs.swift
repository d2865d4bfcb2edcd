/// How many workers' worth of CPU this process may use (`"workers": "auto"`).
extension Sys {
    /// The CPUs in this process's affinity mask, capped by the CPU quota of its cgroup and of every
    /// cgroup above it (cgroup v2 `cpu.max`: a container's or a Kubernetes pod's CPU limit, systemd's
    /// `CPUQuota=`), rounded up: a pod limited to 2.5 CPUs on a 64-CPU node gets 3, not 64.
    public static var usableCPUCount: Int {
        let affinity = allowedCPUs.count
        guard let quota = cgroupCPUQuota() else { return max(1, affinity) }
        return max(1, min(affinity, quota))
    }

    /// The smallest quota, in whole CPUs rounded up, along this process's cgroup path: cgroup v2's
    /// `cpu.max`, or v1's `cpu.cfs_quota_us` / `cpu.cfs_period_us` (older Kubernetes nodes). Nil when
    /// nothing there limits it. Each level up to the root is read: in a container whose cgroup is
    /// mounted as the root, the path /proc/self/cgroup names does not exist there, but the root does.
    static func cgroupCPUQuota() -> Int? {
        guard let membership = try? FileIO.readAll(path: "/proc/self/cgroup", limit: 64 * 1024) else { return nil }
        var smallest: Int? = nil
        func consider(_ cpus: Int?) {
            if let cpus { smallest = min(smallest ?? cpus, cpus) }
        }
        func read(_ file: String) -> String? {
            (try? FileIO.readAll(path: file, limit: 4096)).map { String(decoding: $0, as: UTF8.self) }
        }
        for line in String(decoding: membership, as: UTF8.self).split(separator: "\n") {
            let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count == 3 else { continue }
            let controllers = fields[1].split(separator: ",")
            if fields[0] == "0" && controllers.isEmpty {
                for dir in ancestry(String(fields[2])) { consider(read("/sys/fs/cgroup\(dir)/cpu.max").flatMap(cpuCount(fromCPUMax:))) }
            } else if controllers.contains("cpu") {
                for dir in ancestry(String(fields[2])) {
                    let base = "/sys/fs/cgroup/cpu\(dir)"
                    if let quota = read(base + "/cpu.cfs_quota_us"), let period = read(base + "/cpu.cfs_period_us") {
                        consider(cpuCount(fromCPUMax: quota + " " + period))
                    }
                }
            }
        }
        return smallest
    }

    /// "/a/b" → ["/a/b", "/a", ""] (the empty string: the mount's root).
    static func ancestry(_ path: String) -> [String] {
        var dirs: [String] = []
        var path = path.hasSuffix("/") ? String(path.dropLast()) : path
        while true {
            dirs.append(path)
            guard let slash = path.lastIndex(of: "/") else { break }
            path = String(path[..<slash])
        }
        if dirs.last != "" { dirs.append("") }
        return dirs
    }

    /// `cpu.max` ("QUOTA PERIOD", or "max PERIOD" for no limit; v1's quota is -1 for none) as whole
    /// CPUs, rounded up.
    public static func cpuCount(fromCPUMax text: String) -> Int? {
        let fields = text.split(whereSeparator: { $0 == " " || $0 == "\n" })
        guard fields.count == 2, let quota = Int(fields[0]), let period = Int(fields[1]), quota > 0, period > 0 else { return nil }
        let (whole, rest) = quota.quotientAndRemainder(dividingBy: period)
        return whole + (rest > 0 ? 1 : 0)
    }
}
