// Fetches the cluster's Prometheus metrics from whichever worker answers and shows a few lines.
fetch("/metrics")
  .then((r) => r.text())
  .then((text) => {
    const lines = text.split("\n").filter((l) => /^clusterd_(workers|generation|requests_total|connections_open) /.test(l));
    document.getElementById("status").textContent = "Script loaded: the cluster says";
    document.getElementById("metrics").textContent = lines.join("\n");
  })
  .catch((e) => { document.getElementById("status").textContent = "metrics unavailable: " + e; });
