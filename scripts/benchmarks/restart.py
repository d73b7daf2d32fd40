#!/usr/bin/env python3
"""Hot restart benchmark: SIGHUP -> new epoch LIVE, and requests lost under wrk load.

Side by side in one run:
  * anchor: plain Envoy, cold start to LIVE, and a "cold restart" (SIGTERM, start again)
    under the same wrk load;
  * baton: SIGHUP -> new epoch LIVE (measured from outside by polling the admin API, and
    baton's own restart_ms log field), and wrk's errors across the same number of hot restarts.

Everything listens on 127.0.0.1 ports chosen free; every process started is stopped.
Usage: scripts/bench-restart [--restarts N]
"""

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from common import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TEMPLATE = os.path.join(ROOT, "scripts", "bench", "direct.json")


def server_info(admin):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/server_info", timeout=1) as r:
            return json.load(r)
    except Exception:
        return None


def wait_live(admin, restart_epoch, config_path=None, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = server_info(admin)
        if info and info.get("state") == "LIVE":
            opts = info.get("command_line_options", {})
            if opts.get("restart_epoch") == restart_epoch and (
                config_path is None or opts.get("config_path") == config_path
            ):
                return time.monotonic()
        time.sleep(0.002)
    raise TimeoutError(f"restart epoch {restart_epoch} not LIVE within {timeout}s")


def start_wrk(port, seconds):
    return subprocess.Popen(
        ["wrk", "-t2", "-c16", f"-d{seconds}s", f"http://127.0.0.1:{port}/"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wrk_result(proc):
    out, _ = proc.communicate(timeout=600)
    total = int(re.search(r"(\d+) requests in", out).group(1))
    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    return total, errors, out


def render(baton, work, port, admin):
    path = os.path.join(work, "plain.json")
    subprocess.run(
        [baton, "render", "--template", TEMPLATE, "--var", f"listen_port={port}",
         "--var", "listen_address=127.0.0.1", "--admin-port", str(admin), "--output", path],
        check=True,
    )
    return path


def anchor(envoy, baton, work, restarts, gap):
    """Plain Envoy: cold start time, and cold restarts under load."""
    port, admin = free_port(), free_port()
    cfg = render(baton, work, port, admin)
    starts = []
    proc = None
    wrk = None
    try:
        t0 = time.monotonic()
        proc = subprocess.Popen([envoy, "-c", cfg, "--concurrency", "1", "-l", "error",
                                 "--disable-hot-restart"])
        starts.append(wait_live(admin, 0, timeout=30) - t0)
        wrk = start_wrk(port, int(restarts * (gap + 0.5)) + 2)
        time.sleep(1)
        for _ in range(restarts):
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
            t0 = time.monotonic()
            proc = subprocess.Popen([envoy, "-c", cfg, "--concurrency", "1", "-l", "error",
                                     "--disable-hot-restart"])
            starts.append(wait_live(admin, 0, timeout=30) - t0)
            time.sleep(gap)
        total, errors, _ = wrk_result(wrk)
        wrk = None
    finally:
        if wrk:
            wrk.kill()
        if proc and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    return starts, total, errors


def hot(baton, envoy, work, restarts, gap):
    port, admin = free_port(), free_port()
    cfg_dir = os.path.join(work, "cfg")
    log_path = os.path.join(work, "baton.log")
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [baton, "--log-format", "json", "envoy", "--envoy-binary", envoy, "--template", TEMPLATE,
         "--var", f"listen_port={port}", "--var", "listen_address=127.0.0.1",
         "--admin-port", str(admin), "--config-dir", cfg_dir, "--concurrency", "1",
         "--drain-duration", "1s", "--parent-shutdown-duration", "2s", "--stats-flush-interval", "250ms",
         "--termination-drain-duration", "1s"],
        stdout=log, stderr=log,
    )
    times = []
    wrk = None
    try:
        wait_live(admin, 0, os.path.join(cfg_dir, "envoy-rev0.json"))
        wrk = start_wrk(port, int(restarts * (gap + 0.5)) + 2)
        time.sleep(1)
        for n in range(1, restarts + 1):
            t0 = time.monotonic()
            proc.send_signal(signal.SIGHUP)
            t1 = wait_live(admin, n, os.path.join(cfg_dir, f"envoy-rev{n}.json"))
            times.append(t1 - t0)
            time.sleep(gap)
        total, errors, _ = wrk_result(wrk)
        wrk = None
    finally:
        if wrk:
            wrk.kill()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        log.close()
    logged, startup = [], []
    for line in open(log_path):
        if line.startswith("{"):
            rec = json.loads(line)
            if rec.get("message") == "epoch ready and serving" and rec.get("epoch", 0) > 0:
                logged.append(rec["restart_ms"] / 1000)
                startup.append(rec["startup_ms"] / 1000)
    return times, (logged, startup), total, errors, code


def fmt(xs):
    xs = sorted(xs)
    return f"median {statistics.median(xs) * 1000:.0f} ms, min {xs[0] * 1000:.0f}, max {xs[-1] * 1000:.0f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--restarts", type=int, default=20)
    ap.add_argument("--gap", type=float, default=1.5, help="seconds between restarts")
    ap.add_argument("--baton", default=os.path.join(ROOT, "target", "release", "baton"))
    ap.add_argument("--envoy", required=True)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as work:
        starts, a_total, a_err = anchor(a.envoy, a.baton, work, a.restarts, a.gap)
        times, (logged, startup), h_total, h_err, code = hot(a.baton, a.envoy, work, a.restarts, a.gap)
    print(f"restarts: {a.restarts}, wrk -t2 -c16, {a.gap}s between restarts, Envoy --concurrency 1")
    print(f"anchor  plain Envoy cold start -> LIVE:        {fmt(starts)}")
    print(f"baton   SIGHUP -> new epoch LIVE (external):   {fmt(times)}")
    print(f"baton   trigger -> serving (baton's restart_ms): {fmt(logged)}")
    print(f"baton   of which spawn -> ready (startup_ms):   {fmt(startup)}")
    print(f"ratio   hot restart / cold start (medians):    {statistics.median(times) / statistics.median(starts):.2f}")
    print(f"anchor  cold restarts under load: {a_total} requests, {a_err} errors")
    print(f"baton   hot restarts under load:  {h_total} requests, {h_err} errors")
    print(f"baton exit code after SIGTERM: {code}")
    return 0 if h_err == 0 and code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
