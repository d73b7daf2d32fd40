#!/usr/bin/env python3
"""What a supervisor costs while nothing happens: resident memory, wakeups per second
(voluntary + involuntary context switches of all its threads) and CPU, over `--seconds` of
idling, side by side in one run:

  restarter     Envoy's hot-restarter.py running Envoy (the anchor);
  baton envoy   the same Envoy and bootstrap under `baton envoy` (default flags: Envoy's
                counters flushed to baton every 5 s, status server on);
  baton run     `baton run` + HAProxy (examples/haproxy/haproxy.cfg), upstream not started.

Only the supervisor process is measured, not the proxy it runs.
Usage: scripts/bench idle [--seconds 30] [--json FILE]
"""

import argparse
import os
import signal
import stat
import sys
import tempfile
import time

import common
from common import JsonLog, Processes, free_port, table, tool, wait_until

TEMPLATE = os.path.join(common.BENCH_DIR, "direct.json")
RESTARTER = os.path.normpath(os.path.join(common.ROOT, "..", "shared", "anchors", "hot-restarter.py"))
HAPROXY_EXAMPLE = os.path.join(common.ROOT, "examples", "haproxy", "haproxy.cfg")
START_SCRIPT = """#!/bin/sh
exec {envoy} -c {cfg} --restart-epoch "$RESTART_EPOCH" --concurrency 1 -l warning \
    --use-dynamic-base-id --base-id-path {base}
"""


def measure(pid, seconds):
    w0, c0, t0 = common.context_switches(pid), common.cpu_ticks(pid), time.monotonic()
    time.sleep(seconds)
    w1, c1, t1 = common.context_switches(pid), common.cpu_ticks(pid), time.monotonic()
    threads = len(os.listdir(f"/proc/{pid}/task"))
    return {"rss_mb": common.status_kb(pid, "VmRSS") / 1024, "threads": threads,
            "wakeups_s": common.wakeups_between(w0, w1) / (t1 - t0),
            "cpu_pct": 100 * (c1 - c0) / os.sysconf("SC_CLK_TCK") / (t1 - t0)}


def restarter(a, procs, work):
    port, admin = free_port(), free_port()
    cfg = common.render(a.baton, TEMPLATE, port, admin, os.path.join(work, "plain.json"))
    base = os.path.join(work, "base-id")
    script = os.path.join(work, "start-envoy.sh")
    with open(script, "w") as f:
        f.write(START_SCRIPT.format(envoy=a.envoy, cfg=cfg, base=base))
    os.chmod(script, stat.S_IRWXU)
    sup = procs.popen("hot-restarter.py", [sys.executable, RESTARTER, script],
                      stdout=open(os.devnull, "w"), stderr=open(os.devnull, "w"))
    try:
        common.wait_live(admin, 0)
        time.sleep(1)
        res = measure(sup.pid, a.seconds)
        procs.stop_popen(sup, signal.SIGTERM)
        return res
    finally:
        try:
            common.remove_envoy_shm([open(base).read()])
        except OSError:
            pass


def baton_envoy(a, procs, work):
    port, admin = free_port(), free_port()
    cfg_dir = os.path.join(work, "cfg")
    sup = procs.popen(
        "baton",
        [a.baton, "envoy", "--envoy-binary", a.envoy, "--template", TEMPLATE,
         "--var", f"listen_port={port}", "--var", "listen_address=127.0.0.1",
         "--admin-port", str(admin), "--status-addr", f"127.0.0.1:{free_port()}",
         "--config-dir", cfg_dir, "--concurrency", "1", "--termination-drain-duration", "1s"],
        stdout=open(os.devnull, "w"), stderr=open(os.devnull, "w"))
    common.wait_live(admin, 0)
    time.sleep(1)
    res = measure(sup.pid, a.seconds)
    res["code"] = procs.stop_popen(sup, signal.SIGTERM)
    return res


def baton_run(a, procs, work):
    log_path = os.path.join(work, "baton-run.log")
    out = open(log_path, "w")
    sup = procs.popen(
        "baton",
        [a.baton, "--log-format", "json", "run", "--listen", "http=tcp://127.0.0.1:0",
         "--status-addr", f"127.0.0.1:{free_port()}", "--ready", "notify",
         "--drain-signal", "SIGUSR1", "--termination-drain-duration", "1s", "--",
         a.haproxy, "-Ws", "-f", HAPROXY_EXAMPLE],
        stdout=out, stderr=out, env={**os.environ, "UPSTREAM": f"127.0.0.1:{free_port()}"})
    log = JsonLog(log_path)
    wait_until("epoch 0 serving", lambda: log.find("epoch ready and serving", epoch=0))
    time.sleep(1)
    res = measure(sup.pid, a.seconds)
    res["code"] = procs.stop_popen(sup, signal.SIGTERM)
    log.close()
    out.close()
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--json", help="write every figure here")
    ap.add_argument("--baton", default=common.BATON)
    ap.add_argument("--envoy", required=True)
    a = ap.parse_args()
    a.haproxy = tool("haproxy")
    load_before = common.load_average()
    procs = Processes()
    got = {}
    with tempfile.TemporaryDirectory(prefix="bench-idle-") as work:
        try:
            for key, fn in [("restarter", restarter), ("baton envoy", baton_envoy),
                            ("baton run", baton_run)]:
                print(f"{key}: idling {a.seconds:g} s", file=sys.stderr, flush=True)
                got[key] = fn(a, procs, work)
        finally:
            procs.stop_all()
    anchor = got["restarter"]
    print(f"supervisor alone, {a.seconds:g} s idle after start; load average before "
          f"{load_before}, after {common.load_average()}")
    print()
    rows = []
    for key, r in got.items():
        rows.append([key, f"{r['rss_mb']:.1f} MB", f"{r['rss_mb'] / anchor['rss_mb']:.2f}",
                     r["threads"], f"{r['wakeups_s']:.2f}", f"{r['cpu_pct']:.3f} %"])
    print(table(["supervisor", "RSS", "RSS / restarter's", "threads", "wakeups/s", "CPU"], rows))
    common.save_json(a.json, {"results": got, "load": load_before})
    return 1 if any(r.get("code") for r in got.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
