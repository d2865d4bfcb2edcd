/// The version of clusterd and clusterctl (one number for both: they share the control protocol).
public enum ClusterVersion {
    public static let string = "0.1.0"
}

/// 12345 → "12,345"; -1234567 → "-1,234,567". For counts a person reads (clusterctl, the master's
/// status line).
public func groupedDigits(_ value: Int64) -> String {
    var digits = String(value.magnitude)
    var out = ""
    while digits.count > 3 {
        out = "," + digits.suffix(3) + out
        digits.removeLast(3)
    }
    return (value < 0 ? "-" : "") + digits + out
}
