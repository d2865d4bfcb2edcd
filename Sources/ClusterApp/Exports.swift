// `import ClusterApp` is all an application needs, as `import Hummingbird` is: the router and its
// types, plus `Cluster` (`Cluster.main`, `StockHandler`, `HandlerContext`) and `ClusterHTTP` (the
// handler API under the router: `HTTPHandler`, `HTTPRequest`, `HTTPResponse`, `HTTPError`).
@_exported import Cluster
@_exported import ClusterHTTP
// `ClusterConfiguration` (what `HandlerContext.config` is) and `IPAddress` (`clientAddress`).
@_exported import ClusterConfig
