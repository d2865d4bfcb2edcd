import ClusterConfig
import ClusterControl
import ClusterHTTP
import ClusterJSON
import ClusterMaster
import ClusterSystem
import ClusterTLS
import ClusterWorker
import Logging

/// Exit codes with a meaning for scripts and for the master.
public enum ExitCode {
    public static let success: Int32 = 0
    /// Something failed at run time (a syscall, a bind).
    public static let failure: Int32 = 1
    /// Bad command line.
    public static let usage: Int32 = 64
    /// The config is invalid: a master does not respawn a worker that exits with it.
    public static let config: Int32 = FatalConfigExit.code
}

/// What a handler factory is given: the config to serve and, in a worker, the cluster it belongs to.
public struct HandlerContext {
    public var config: ClusterConfiguration
    /// The shared stats segment (every worker's slot plus the master's), read-only for a handler
    /// (what `/metrics` renders). Nil where no worker runs the handler: the master's validation of
    /// a config (`--check-config`, start-up, reload), and tests.
    public var stats: StatsSegment?
    /// The worker's life as the handler may see it (`isStopping`: answer health checks with 503);
    /// nil where no worker runs the handler.
    public var lifecycle: WorkerLifecycle?

    public init(config: ClusterConfiguration, stats: StatsSegment? = nil, lifecycle: WorkerLifecycle? = nil) {
        self.config = config
        self.stats = stats
        self.lifecycle = lifecycle
    }

    /// The config's `app` section (the application's own settings), nil when it has none. Throw a
    /// `ConfigError` from the factory for a value it cannot use: the config is then refused at
    /// start, `--check-config` and reload, like any other mistake.
    public var app: JSON? { config.app }
}

/// Who the program is: `clusterd`, or an application built on the library, which names itself in
/// `--version`, `--help`, its messages and logs, and the `Server` header.
public struct AppInfo: Sendable, Equatable {
    /// A short name (a token: letters, digits, `-`, `_`, `.`), e.g. "todo".
    public var name: String
    public var version: String

    public init(name: String, version: String) {
        self.name = name
        self.version = version
    }

    public static let clusterd = AppInfo(name: "clusterd", version: ClusterVersion.string)
}

/// The library's one entry point: a Swift program calls `Cluster.main` with a factory for its
/// handler and becomes a full clusterd — master, workers, control socket, systemd, reload, scale —
/// configured from the same JSON file.
public enum Cluster {
    /// The program running (`main(app:)`).
    nonisolated(unsafe) public private(set) static var app = AppInfo.clusterd

    /// Runs as master, or as a worker when started by a master. Never returns. `makeHandler` runs in
    /// the master to validate each config (the context without stats) and once in each worker.
    ///
    /// Logging: clusterd's own loggers write to standard error at `CLUSTERD_LOG_LEVEL` (info) without
    /// touching swift-log's global `LoggingSystem`, which stays the application's: bootstrap it
    /// before or after calling this, or leave swift-log's default (standard error, info).
    public static func main<H: HTTPHandler>(
        app: AppInfo = .clusterd,
        arguments: [String] = Array(CommandLine.arguments.dropFirst()),
        makeHandler: @escaping (HandlerContext) throws -> H
    ) -> Never {
        Signals.ignorePipe()
        Self.app = app
        if !ServerName.set(app.name) {
            Sys.printError("\(app.name): the application's name must be a token (letters, digits, - _ . and the like) of at most 64 bytes\n")
            Sys.exit(ExitCode.usage)
        }
        if Sys.environment(WorkerStartup.slotVariable) != nil {
            Sys.exit(runWorker(makeHandler: makeHandler))
        }
        let options: DaemonOptions
        switch DaemonOptions.parse(arguments) {
        case .success(let o): options = o
        case .failure(let e):
            Sys.printError("\(app.name): \(e.message)\n\(DaemonOptions.usage(for: app.name))")
            Sys.exit(ExitCode.usage)
        }
        if options.showHelp {
            print(DaemonOptions.usage(for: app.name))
            Sys.exit(ExitCode.success)
        }
        if options.showVersion {
            let build = "build \(BuildID.current?.description ?? "none")"
            print(app == .clusterd ? "clusterd \(app.version) (\(build))" : "\(app.name) \(app.version) (clusterd \(ClusterVersion.string), \(build))")
            Sys.exit(ExitCode.success)
        }
        // Started by `clusterctl upgrade` (this process's previous image): the running config's bytes
        // come with what it handed over. A failure here exits 1, not 78: the unit's Restart= then
        // starts a fresh master on the listeners in systemd's fd store.
        let upgrade: UpgradeState?
        do { upgrade = try UpgradeState.take() } catch {
            Sys.printError("\(app.name): upgrade: \(error)")
            Sys.exit(ExitCode.failure)
        }
        let config: ClusterConfiguration
        let configBytes: [UInt8]
        do {
            if let upgrade {
                let memfd = Descriptor(taking: upgrade.configFD)
                configBytes = try FileIO.readAll(fd: memfd.rawValue, limit: 4 * 1024 * 1024, name: "running config")
                config = try ClusterConfiguration.decode(configBytes, file: options.configPath)
            } else {
                (config, configBytes) = try loadConfigAndBytes(path: options.configPath)
            }
            try ConfigCheck.validate(config, makeHandler: makeHandler)
        } catch {
            Sys.printError("\(app.name): \(upgrade == nil ? "" : "upgrade: the running config: ")\(error)")
            Sys.exit(upgrade == nil ? ExitCode.config : ExitCode.failure)
        }
        if options.checkConfig {
            print("\(app.name): \(options.configPath): configuration is valid (\(config.workers) workers, listen \(config.listen.map(\.description).joined(separator: ", ")))")
            for line in (try? ConfigCheck.describeTLS(config)) ?? [] { print("\(app.name): \(line)") }
            Sys.exit(ExitCode.success)
        }
        Sys.exit(runMaster(options: options, config: config, configBytes: configBytes, upgrade: upgrade, makeHandler: makeHandler))
    }

    /// The name a worker shows in `ps -o comm` and `top`: its binary's, although it runs from
    /// /proc/self/exe (which would show as "exe").
    static var processName: String {
        CommandLine.arguments.first.flatMap { $0.split(separator: "/").last.map(String.init) } ?? "clusterd"
    }

    /// Reads and validates a config file.
    public static func loadConfig(path: String) throws -> ClusterConfiguration {
        try loadConfigAndBytes(path: path).0
    }

    /// The validated config and the exact bytes it came from (what the workers get).
    static func loadConfigAndBytes(path: String) throws -> (ClusterConfiguration, [UInt8]) {
        let bytes: [UInt8]
        do {
            bytes = try FileIO.readRegularFile(path: path, limit: 4 * 1024 * 1024)
        } catch {
            throw ConfigError(file: path, keyPath: "", message: "cannot read: \(error.reason)")
        }
        return (try ClusterConfiguration.decode(bytes, file: path), bytes)
    }

    /// One of clusterd's own loggers: standard error at `CLUSTERD_LOG_LEVEL`, whatever the
    /// application made of swift-log's global `LoggingSystem` (clusterd never bootstraps it).
    static func makeLogger(label: String) -> Logger {
        let level = logLevel(Sys.environment("CLUSTERD_LOG_LEVEL"))
        return Logger(label: label) { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
    }

    /// `CLUSTERD_LOG_LEVEL`: any of swift-log's levels by name (trace, debug, info, notice,
    /// warning, error, critical); unset or anything else: info.
    static func logLevel(_ name: String?) -> Logger.Level {
        name.flatMap(Logger.Level.init(rawValue:)) ?? .info
    }


    /// The master: owns listeners, spawns and supervises workers, serves the control socket.
    static func runMaster<H: HTTPHandler>(options: DaemonOptions, config: ClusterConfiguration, configBytes: [UInt8], upgrade: UpgradeState?, makeHandler: @escaping (HandlerContext) throws -> H) -> Int32 {
        let logger = makeLogger(label: app.name)
        do {
            let master = try Master(
                options: Master.Options(
                    configPath: options.configPath, executable: ProcessControl.currentExecutable(),
                    arguments: ["--config", options.configPath], validate: { try ConfigCheck.validate($0, makeHandler: makeHandler) }),
                config: config, configBytes: configBytes, logger: logger, upgrade: upgrade)
            return master.run()
        } catch {
            logger.critical("\(error)")
            return ExitCode.failure
        }
    }

    /// Each listener's TLS, in `listen` order (nil: plain HTTP), as `ConfigCheck.checkTLS` checked it.
    /// `announce` (slot 0: once per generation): logs the record layer and the certificates served,
    /// and warns of one with under 14 days left.
    static func loadTLS(_ config: ClusterConfiguration, logger: Logger, announce: Bool) throws(ConfigError) -> [TLSServer?] {
        guard !config.tls.isEmpty else { return [] }
        let kernelTLS = TLSServer.kernelTLSAvailable()
        var servers: [TLSServer?] = []
        for (i, address) in config.listen.enumerated() {
            guard let tls = config.tls[address] else {
                servers.append(nil)
                continue
            }
            let server = try TLSServer(tls, file: config.source, keyPath: "listen[\(i)].tls", now: Clock.wallSeconds(), kernelTLSAvailable: kernelTLS)
            servers.append(server)
            let layer = server.kernelTLS ? "kernel TLS offered (kTLS; SSL_sendfile for files)"
                : tls.kernelTLS ? "OpenSSL records (kernel TLS unavailable: no tls module in tcp_available_ulp)" : "OpenSSL records (kernelTLS off)"
            guard announce else { continue }
            let certificates = server.certificates.map { "\($0.path) serial \($0.serial) until \(TLSCertificateInfo.date($0.notAfter))" }
            logger.info("\(address) TLS: \(layer); \(certificates.joined(separator: ", "))")
            let now = Clock.wallSeconds()
            for c in server.certificates where c.notAfter - now < 14 * 86400 {
                logger.warning("\(c.path) (\(c.subject)) expires in \((c.notAfter - now) / 3600) hours, at \(TLSCertificateInfo.date(c.notAfter)): renew it and reload")
            }
        }
        return servers
    }

    /// A worker started by the master: listeners from fd 3 (LISTEN_FDS), the channel and the stats
    /// segment from the environment, the config from the memfd the master validated.
    static func runWorker<H: HTTPHandler>(makeHandler: (HandlerContext) throws -> H) -> Int32 {
        let startup = WorkerStartup(environment: Sys.environment)
        let slot = startup?.slot ?? -1
        let logger = makeLogger(label: "\(app.name).worker[\(slot)]")
        Sys.dieWithParent(signal: SignalNumber.terminate)
        guard let startup else {
            logger.critical("started as a worker without the master's environment")
            return ExitCode.config
        }
        if Sys.parentPID != startup.masterPID {
            logger.error("master \(startup.masterPID) is gone; exiting")
            return ExitCode.failure
        }
        Sys.setProcessName(processName)
        let build = BuildID.current?.description ?? ""
        if build != startup.build {
            // The master spawns workers from its own image (`ProcessControl.openCurrentImage`), so this
            // takes a binary started by hand or a master that lost its image: never serve with a
            // master of another build (the channel's messages are only agreed within one).
            logger.critical("version skew: this worker's binary is build \(build.isEmpty ? "(none)" : build), its master runs build \(startup.build.isEmpty ? "(none)" : startup.build); refusing to serve")
            return ExitCode.config
        }
        do {
            // Owned from here, for as long as the worker runs (it borrows their numbers): the
            // channel and the listeners; closed on every error on the way.
            let channel = Descriptor(taking: startup.channelFD)
            var listeners = DescriptorList()
            for fd in startup.listenerFDs { listeners.append(Descriptor(taking: fd)) }
            // Owned from here: closed once read or mapped, and on every error on the way.
            let configMemfd = Descriptor(taking: startup.configFD), statsMemfd = Descriptor(taking: startup.statsFD)
            _ = Descriptor(taking: startup.imageFD)  // the binary this was started from: not needed
            let configBytes = try FileIO.readAll(fd: configMemfd.rawValue, name: "config memfd")
            _ = consume configMemfd
            let config = try ClusterConfiguration.decode(configBytes, file: startup.configPath)
            let base = try FileIO.map(fd: statsMemfd.rawValue, size: StatsSegment.byteCount(workerSlots: startup.statsSlots))
            _ = consume statsMemfd
            let segment = StatsSegment(base: base, workerSlots: startup.statsSlots)
            let stats = StatsSlot(base: base + startup.statsSlot * StatsSlot.size)
            stats[.generation] = UInt64(startup.generation)
            stats[.slot] = UInt64(slot)
            for fd in listeners.rawValues { try Sys.setNonBlocking(fd) ; try Sys.setCloseOnExec(fd, true) }
            try Sys.setCloseOnExec(channel.rawValue, true)
            try Sys.setNonBlocking(channel.rawValue)
            if let cpu = config.cpuAffinity.cpu(forSlot: slot, allowed: Sys.allowedCPUs) {
                do { try Sys.pinToCPU(cpu) } catch { logger.warning("cpuAffinity: cannot pin to CPU \(cpu): \(error)") }
            }
            let lifecycle = WorkerLifecycle()
            // Before the handler's factory can start threads (a database driver's event loop, the
            // concurrency runtime's pool): they inherit this mask, so TERM and the others reach the
            // worker's signalfd and drain it instead of killing it.
            try Signals.block(HTTPWorker<H, LinuxKernel>.signals)
            let handler = try makeHandler(HandlerContext(config: config, stats: segment, lifecycle: lifecycle))
            // Certificates and keys, read now as the master's user (the key may be root's only).
            let tls = try loadTLS(config, logger: logger, announce: slot == 0)
            let worker = try HTTPWorker(handler: handler, settings: WorkerSettings(config), listeners: listeners.rawValues, channel: channel.rawValue,
                                        stats: stats, logger: logger, lifecycle: lifecycle, tls: tls)
            // `user`/`group`: give up the master's privileges before the first byte from a client is
            // read. Everything opened as the master's user (listeners, channel, stats, access log,
            // the handler's files) stays open.
            if let ids = try WorkerIdentity.resolve(config) {
                do { try Identity.switchTo(uid: ids.uid, gid: ids.gid) } catch {
                    logger.critical("cannot switch to uid \(ids.uid), gid \(ids.gid): \(error)")
                    return ExitCode.config
                }
            }
            return try worker.run()
        } catch let error as SystemError {
            logger.critical("\(error)")
            return ExitCode.failure
        } catch {
            logger.critical("\(error)")
            return ExitCode.config
        }
    }
}
