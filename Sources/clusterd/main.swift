import Cluster

// The stock app: routes, /healthz (and, later, static files and metrics) from the config.
Cluster.main { config in try StockHandler(config: config) }
