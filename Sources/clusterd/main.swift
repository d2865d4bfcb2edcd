import Cluster

// The stock app: the config's routes and static roots, /healthz and the Prometheus /metrics
// (StockHandler), run as master and workers by the Cluster library.
Cluster.main { context in try StockHandler(context: context) }
