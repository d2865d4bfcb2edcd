import ClusterConfig
import ClusterHTTP
import ClusterSystem

extension HTTPRequest {
    /// The client's address, as far as this server can know it: from a trusted proxy's
    /// `X-Forwarded-For` (`forwardedClient`), else the PROXY protocol header of the connection
    /// (`proxiedClient`), else the socket's peer (`getpeername`, asked on each use). Nil on a Unix
    /// socket without either, or where the request has no socket (tests).
    ///
    /// What the access log writes and what `metrics.allow` is matched against; a handler that
    /// limits, logs or locates by client uses it too. Never believe `X-Forwarded-For` yourself:
    /// anyone can send one, and this reads it only from `trustedProxies`.
    public var clientAddress: IPAddress? {
        if let forwarded = forwardedClient { return IPAddress(bytes: forwarded.bytes) }
        if let proxied = proxiedClient { return IPAddress(bytes: proxied.address.bytes) }
        return Socket.peerAddressBytes(socket).flatMap { IPAddress(bytes: $0) }
    }
}
