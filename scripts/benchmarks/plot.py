#!/usr/bin/env python3
"""Requests per second and errors over time across restarts, one panel per variant, as a PNG.

Runs the Envoy figure (restarter, baton, cold restarts) and the generic figure (baton + HAProxy,
HAProxy -sf, -x, nginx reload, baton + nginx) with baton's loadgen example as the load (it
counts like wrk and keeps a timeline in 100 ms buckets), then draws every timeline: answers
per second (line), errors per second (red), and a dashed line at each restart signal.
Their tables are printed as each figure prints them.

Usage: scripts/bench plot [--restarts 10] [--out docs/restarts-timeline.png]
                          [--from DIR (draw timelines written before)] [--keep DIR]
"""

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile

import common

ORDER = ["envoy-restarter0", "envoy-baton0", "envoy-cold0", "generic-baton-haproxy",
         "generic-haproxy-sf", "generic-haproxy-x", "generic-nginx-reload", "generic-baton-nginx"]
TITLES = {
    "envoy-restarter0": "Envoy under hot-restarter.py (SIGHUP)",
    "envoy-baton0": "Envoy under baton envoy (SIGHUP)",
    "envoy-cold0": "plain Envoy, cold restarts (SIGTERM, start)",
    "generic-baton-haproxy": "baton run + HAProxy (SIGHUP)",
    "generic-haproxy-sf": "HAProxy -sf reload",
    "generic-haproxy-x": "HAProxy -x -sf reload",
    "generic-nginx-reload": "nginx -s reload",
    "generic-baton-nginx": "baton run + nginx (SIGHUP)",
}


def run_figures(a, out_dir):
    py = sys.executable
    bench = common.BENCH_DIR
    subprocess.run([py, os.path.join(bench, "envoy.py"), "--envoy", a.envoy,
                    "--restarts", str(a.restarts), "--timelines", out_dir], check=True)
    subprocess.run([py, os.path.join(bench, "generic.py"), "--restarts", str(a.restarts),
                    "--gap", "1", "--timelines", out_dir], check=True)


def draw(timelines, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in ORDER if n in timelines] + sorted(set(timelines) - set(ORDER))
    fig, axes = plt.subplots(len(names), 1, figsize=(11, 1.9 * len(names)), squeeze=False)
    for ax, name in zip(axes[:, 0], names):
        t = timelines[name]
        per_s = 1000 / t["bucket_ms"]
        xs = [i * t["bucket_ms"] / 1000 for i in range(len(t["answers"]))]
        ax.plot(xs, [v * per_s / 1000 for v in t["answers"]], lw=0.8, color="tab:blue")
        ax.set_ylabel("k answers/s", color="tab:blue", fontsize=8)
        ax.set_ylim(bottom=0)
        errs = ax.twinx()
        errs.bar(xs, [v * per_s for v in t["errors"]], width=t["bucket_ms"] / 1000,
                 color="tab:red", alpha=0.8)
        errs.set_ylabel("errors/s", color="tab:red", fontsize=8)
        top = max(t["errors"], default=0) * per_s
        errs.set_ylim(0, max(top * 1.1, 10))
        for m in t.get("marks", []):
            ax.axvline(m - t["start_unix"], color="gray", ls="--", lw=0.6)
        total = sum(t["answers"])
        ax.set_title(f"{TITLES.get(name, name)}: {total:,} answers, {sum(t['errors']):,} errors",
                     fontsize=9, loc="left")
        ax.tick_params(labelsize=7)
        errs.tick_params(labelsize=7)
    axes[-1, 0].set_xlabel("seconds since the load started (dashed: restart signal)")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--restarts", type=int, default=10)
    ap.add_argument("--out", default=os.path.join(common.ROOT, "docs", "restarts-timeline.png"))
    ap.add_argument("--from", dest="source", help="draw the timelines in this directory")
    ap.add_argument("--keep", help="keep the timelines in this directory")
    ap.add_argument("--envoy", required=True)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-plot-") as tmp:
        source = a.source or a.keep or tmp
        if not a.source:
            os.makedirs(source, exist_ok=True)
            run_figures(a, source)
        timelines = {}
        for path in glob.glob(os.path.join(source, "*.json")):
            with open(path) as f:
                timelines[os.path.basename(path)[:-5]] = json.load(f)
        draw(timelines, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
