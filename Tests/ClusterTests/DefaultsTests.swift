import ClusterConfig
import ClusterHTTP
import ClusterWorker
import Testing

/// One source for each default (issue 13 item 7): the worker takes its defaults from
/// `ClusterConfiguration`, and the HTTP engine's own (for a library user without a config) are the
/// same numbers.
@Suite struct Defaults {
    @Test func workerDefaultsAreTheConfigurationsDefaults() {
        let fromConfig = WorkerSettings(ClusterConfiguration())
        let plain = WorkerSettings()
        #expect(plain.limits == fromConfig.limits)
        #expect(plain.keepAliveTimeout == fromConfig.keepAliveTimeout && plain.headerTimeout == fromConfig.headerTimeout)
        #expect(plain.bodyTimeout == fromConfig.bodyTimeout && plain.sendTimeout == fromConfig.sendTimeout)
        #expect(plain.maxConnections == fromConfig.maxConnections && plain.busyPollMicroseconds == fromConfig.busyPollMicroseconds)
        #expect(plain.keepAliveTimeout == Int64(ClusterConfiguration().http.keepAliveTimeout * 1000))
    }

    @Test func engineDefaultsAreTheConfigurationsDefaults() {
        #expect(WorkerSettings(ClusterConfiguration()).limits == HTTPLimits())
    }
}
