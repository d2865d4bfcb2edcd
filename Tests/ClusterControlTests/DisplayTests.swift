import ClusterControl
import Testing

/// Digit grouping has one implementation, shared by clusterctl and the master's status line.
@Suite struct Display {
    @Test func groupedDigits() {
        let cases: [(Int64, String)] = [
            (0, "0"), (999, "999"), (1000, "1,000"), (12345, "12,345"), (-1_234_567, "-1,234,567"),
            (Int64.min, "-9,223,372,036,854,775,808"), (Int64.max, "9,223,372,036,854,775,807"),
        ]
        for (value, text) in cases { #expect(ClusterControl.groupedDigits(value) == text) }
    }
}
