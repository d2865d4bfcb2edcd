#!/usr/bin/env python3
"""SVG plots from a bench report (bench-results/latest.json), no dependencies:
  connections.svg  requests/s against concurrent connections, clusterd and nginx (1 pinned worker)
  scenarios.svg    clusterd/nginx ratio per scenario
Usage: plot.py REPORT.json OUTDIR"""
import json
import os
import sys

COLORS = {"clusterd": "#00587a", "nginx": "#c0392b"}


def line_chart(sweep, path):
    w, h, ml, mr, mt, mb = 640, 360, 80, 20, 40, 50
    xs = sorted({int(c) for v in sweep.values() for c in v})
    ymax = max(r for v in sweep.values() for r in v.values()) * 1.1
    def X(i): return ml + i * (w - ml - mr) / max(1, len(xs) - 1)
    def Y(v): return h - mb - v / ymax * (h - mt - mb)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{w / 2}" y="22" text-anchor="middle" font-size="15">Requests/s vs connections (1 pinned worker, keep-alive)</text>']
    for k in range(6):
        v = ymax * k / 5
        out.append(f'<line x1="{ml}" x2="{w - mr}" y1="{Y(v):.1f}" y2="{Y(v):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{ml - 6}" y="{Y(v) + 4:.1f}" text-anchor="end">{v / 1000:.0f}k</text>')
    for i, c in enumerate(xs):
        out.append(f'<text x="{X(i):.1f}" y="{h - mb + 18}" text-anchor="middle">{c}</text>')
    out.append(f'<text x="{(ml + w - mr) / 2}" y="{h - 12}" text-anchor="middle">concurrent connections (wrk -t1)</text>')
    for n, (name, series) in enumerate(sorted(sweep.items())):
        pts = " ".join(f"{X(i):.1f},{Y(series[str(c)] if str(c) in series else series[c]):.1f}" for i, c in enumerate(xs))
        color = COLORS.get(name, "#555")
        out.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2.5"/>')
        for i, c in enumerate(xs):
            v = series[str(c)] if str(c) in series else series[c]
            out.append(f'<circle cx="{X(i):.1f}" cy="{Y(v):.1f}" r="3.5" fill="{color}"/>')
        out.append(f'<rect x="{ml + 10 + n * 110}" y="{mt + 2}" width="14" height="4" fill="{color}"/>'
                   f'<text x="{ml + 30 + n * 110}" y="{mt + 8}">{name}</text>')
    out.append("</svg>")
    open(path, "w").write("\n".join(out))


def bar_chart(summary, path):
    w, h, ml, mt, mb = 640, 300, 140, 40, 30
    items = list(summary.items())
    rmax = max(max(v["ratio"] for _, v in items) * 1.15, 1.2)
    bar_h = (h - mt - mb) / len(items)
    def X(r): return ml + r / rmax * (w - ml - 30)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{w / 2}" y="22" text-anchor="middle" font-size="15">clusterd requests/s as a multiple of nginx\'s</text>',
           f'<line x1="{X(1):.1f}" x2="{X(1):.1f}" y1="{mt}" y2="{h - mb}" stroke="#c0392b" stroke-dasharray="4"/>',
           f'<text x="{X(1) + 4:.1f}" y="{h - mb + 16}" fill="#c0392b">nginx = 1</text>']
    for i, (name, v) in enumerate(items):
        y = mt + i * bar_h + 6
        out.append(f'<text x="{ml - 8}" y="{y + bar_h / 2}" text-anchor="end">{name}</text>')
        out.append(f'<rect x="{ml}" y="{y:.1f}" width="{X(v["ratio"]) - ml:.1f}" height="{bar_h - 12:.1f}" fill="#00587a"/>')
        out.append(f'<text x="{X(v["ratio"]) + 4:.1f}" y="{y + bar_h / 2:.1f}">{v["ratio"]:.2f}×</text>')
    out.append("</svg>")
    open(path, "w").write("\n".join(out))


def main():
    report = json.load(open(sys.argv[1]))
    outdir = sys.argv[2]
    os.makedirs(outdir, exist_ok=True)
    line_chart(report["connections_sweep"], os.path.join(outdir, "connections.svg"))
    bar_chart(report["summary"], os.path.join(outdir, "scenarios.svg"))
    print(f"plots: {outdir}/connections.svg {outdir}/scenarios.svg")


if __name__ == "__main__":
    main()
