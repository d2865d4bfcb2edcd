@testable import Cluster
import Logging
import Testing

@Suite struct LogLevels {
    /// Every swift-log level is taken by its name (notice and critical were read as info).
    @Test func everyLevelByName() {
        for level in [Logger.Level.trace, .debug, .info, .notice, .warning, .error, .critical] {
            #expect(Cluster.logLevel(level.rawValue) == level)
        }
        #expect(Cluster.logLevel(nil) == .info)
        #expect(Cluster.logLevel("loud") == .info)
    }
}
