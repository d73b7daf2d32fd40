#!/usr/bin/env python3
"""Scrape cost: baton's /stats/prometheus against Envoy's own, for one Envoy config.

The config is generated: one HTTP listener whose route /c<i>/ goes to cluster c<i>, for
--clusters clusters (222 make about 50,000 series in Envoy's own exposition), every cluster
a static endpoint on a small loopback upstream run here. One request goes through every
cluster first, so each cluster's counters are used and carried. Then, side by side in one
run, --scrapes scrapes of each, alternating:
  * the anchor: Envoy's own admin /stats/prometheus (what baton fetches and rewrites);
  * baton's /stats/prometheus (baton's metrics + Envoy's, counters carried).
For each: time per scrape (median, p90), bytes, sample lines, families; and baton's RSS.

--baton PATH measures another build (e.g. the code before a change) on the same config;
--clusters 0 uses the standalone template instead (one listener, one upstream cluster).

Everything listens on 127.0.0.1 ports chosen free; every process started is stopped.
Usage: scripts/bench scrape [--clusters N] [--scrapes N] [--baton PATH]
"""

import argparse
import http.server
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import common
from common import free_port

ROOT = common.ROOT


class Ok(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


def bootstrap(clusters, listen, admin, upstream):
    routes = [
        {"match": {"prefix": f"/c{i}/"}, "route": {"cluster": f"c{i}"}} for i in range(clusters)
    ]
    return {
        "node": {"id": "bench", "cluster": "bench"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "ingress",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                                        "stat_prefix": "ingress_http",
                                        "route_config": {
                                            "virtual_hosts": [
                                                {"name": "all", "domains": ["*"], "routes": routes}
                                            ]
                                        },
                                        "http_filters": [
                                            {
                                                "name": "envoy.filters.http.router",
                                                "typed_config": {
                                                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                                                },
                                            }
                                        ],
                                    },
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                {
                    "name": f"c{i}",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": f"c{i}",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": "127.0.0.1",
                                                    "port_value": upstream,
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
                for i in range(clusters)
            ],
        },
    }


def get(port, path, timeout=30):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        return r.read()


def wait(what, cond, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            v = cond()
            if v:
                return v
        except Exception:
            pass
        time.sleep(0.1)
    raise TimeoutError(what)


def shape(body):
    text = body.decode()
    samples = sum(1 for l in text.splitlines() if l and not l.startswith("#"))
    families = sum(1 for l in text.splitlines() if l.startswith("# TYPE "))
    return len(body), samples, families


def timed(targets, n):
    """Scrape each (port, path) of `targets` in turn, n rounds (alternating, so that both
    see the same machine load): per target, median and p90 in ms, and the last body."""
    times = [[] for _ in targets]
    bodies = [b""] * len(targets)
    for _ in range(n):
        for i, (port, path) in enumerate(targets):
            t0 = time.perf_counter()
            bodies[i] = get(port, path)
            times[i].append((time.perf_counter() - t0) * 1000)
    out = []
    for t, body in zip(times, bodies):
        t.sort()
        out.append((statistics.median(t), t[int(0.9 * (len(t) - 1))], body))
    return out


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def logged(log_path, message, field):
    """Values of `field` (µs, returned in ms) in baton's debug lines `message`."""
    values = []
    with open(log_path) as f:
        for line in f:
            if f'"{message}"' in line:
                try:
                    values.append(json.loads(line)[field] / 1000)
                except (ValueError, KeyError):
                    pass
    return values


def summary(values):
    values = sorted(values)
    return f"median {statistics.median(values):.1f} ms, p90 {values[int(0.9 * (len(values) - 1))]:.1f} ms"


def cpu_ms(pid):
    """User + system CPU time of a process so far, in ms."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def carried(body):
    for line in body.decode().splitlines():
        if line.startswith("baton_envoy_carried_series "):
            return int(line.split()[1])
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--envoy", required=True)
    ap.add_argument("--baton", default=os.path.join(ROOT, "target", "release", "baton"))
    ap.add_argument("--clusters", type=int, default=222)
    ap.add_argument("--scrapes", type=int, default=20)
    args = ap.parse_args()

    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    up_port = upstream.server_address[1]
    listen, admin, status = free_port(), free_port(), free_port()
    work = tempfile.mkdtemp(prefix="bench-scrape-")
    cmd = [
        args.baton, "--log-format", "json", "--log-level",
        "info,baton::status::metrics=debug,baton::proxy::envoy::metrics_service=debug",
        "envoy", "--envoy-binary", args.envoy,
        "--admin-port", str(admin), "--config-dir", os.path.join(work, "cfg"),
        "--status-addr", f"127.0.0.1:{status}", "--concurrency", "1",
        "--stats-flush-interval", "1s",
    ]
    if args.clusters > 0:
        config = os.path.join(work, "bootstrap.json")
        with open(config, "w") as f:
            json.dump(bootstrap(args.clusters, listen, admin, up_port), f)
        cmd += ["--custom-config", config]
        paths = [f"/c{i}/" for i in range(args.clusters)]
    else:
        cmd += ["--template", "standalone", "--var", f"listen_port={listen}",
                "--var", "listen_address=127.0.0.1", "--var", f"upstream=127.0.0.1:{up_port}"]
        paths = ["/"] * 100
    log = open(os.path.join(work, "baton.log"), "w")
    baton = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait("baton ready", lambda: get(status, "/healthz/ready", 2) == b"ready\n")
        for p in paths:
            get(listen, p)
        # Let the flushes carry every used counter, until the count stops moving.
        last = [None]

        def settled():
            n = carried(get(status, "/stats/prometheus"))
            done = n is None or (n == last[0] and n > 0)
            last[0] = n
            time.sleep(1.5)
            return done

        wait("carried series settle", settled)
        # Idle but for Envoy's flushes (one a second): what receiving them costs.
        cpu0, t0 = cpu_ms(baton.pid), time.monotonic()
        time.sleep(10)
        idle_cpu = (cpu_ms(baton.pid) - cpu0) / (time.monotonic() - t0)
        (e_med, e_p90, e_body), (b_med, b_p90, b_body) = timed(
            [(admin, "/stats/prometheus"), (status, "/stats/prometheus")], args.scrapes
        )
        rss = rss_kib(baton.pid)
        print(f"baton: {args.baton}")
        print(f"clusters: {args.clusters}, scrapes: {args.scrapes} each, alternating")
        print(f"carried counter series: {carried(b_body)}")
        print(f"{'':34} {'median ms':>10} {'p90 ms':>8} {'bytes':>11} {'samples':>8} {'families':>9}")
        for name, med, p90, body in [
            ("anchor: Envoy /stats/prometheus", e_med, e_p90, e_body),
            ("baton /stats/prometheus", b_med, b_p90, b_body),
        ]:
            size, samples, families = shape(body)
            print(f"{name:34} {med:10.1f} {p90:8.1f} {size:11,} {samples:8,} {families:9,}")
        print(f"baton / anchor (median time): {b_med / e_med:.2f}")
        log_path = os.path.join(work, "baton.log")
        own = logged(log_path, "scrape served", "own_us")[-args.scrapes:]
        if own:
            print(f"baton's own work per scrape (merge + its metrics, beside Envoy's answer): {summary(own)}")
        flushes = logged(log_path, "envoy flush carried", "apply_us")
        if flushes:
            print(f"baton's work per Envoy flush received (keys + sums, after decoding): {summary(flushes)}")
        print(f"baton's CPU between scrapes, receiving a flush a second: {idle_cpu:.1f} ms per second")
        with open("/proc/loadavg") as f:
            print(f"load average during the run: {' '.join(f.read().split()[:3])}")
        print(f"baton RSS after the scrapes: {rss / 1024:.1f} MiB")
    finally:
        baton.send_signal(signal.SIGTERM)
        try:
            baton.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(baton.pid, signal.SIGKILL)
            baton.wait()
        upstream.shutdown()
        log.close()
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    sys.exit(main())
