#!/usr/bin/env python3
"""Soak: many hot restarts under load, watching baton's own resources for leaks.

For each variant (baton envoy, baton run + HAProxy, baton run + nginx), one baton is
hot-restarted N times (default 1,000) under a wrk keep-alive load (`wrk -t1 -c8`). Every
`--every` restarts (default 100) the script samples, from outside:
  * baton's open file descriptors (/proc/PID/fd), RSS (VmRSS) and threads,
  * entries in /dev/shm (the run's own: the count minus the count before it started),
  * files in baton's private directory (`--config-dir` for Envoy: envoy-rev<N>.json, base
    id files; the notify-socket directory for `baton run`).
A restart is done when baton's JSON log says the new epoch serves. After the last restart
baton gets SIGTERM; its exit code, and what is left behind (processes, /dev/shm entries,
files), are reported. The output is one markdown table per variant, as BENCHMARKS.md shows.

Not part of CI: 1,000 restarts of Envoy take ~25 minutes (each waits out the previous
epoch's drain + one stats flush, 1.25 s here).

Usage: scripts/bench soak [--restarts N] [--every K] [--only envoy,haproxy,nginx]
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import common
from common import Load, Processes, become_subreaper, free_port, tool, wait_until
from generic import haproxy_cfg, nginx_cfg, start_upstream

ROOT = common.ROOT
DIRECT = os.path.join(ROOT, "scripts", "benchmarks", "direct.json")


class Log:
    """baton's JSON log, read incrementally: each wait scans only what is new."""

    def __init__(self, path):
        self.f = open(path)
        self.rest = ""
        self.serving = set()
        self.refused = 0
        self.crashed = 0

    def poll(self):
        self.rest += self.f.read()
        *lines, self.rest = self.rest.split("\n")
        for line in lines:
            if not line.startswith("{"):
                continue
            try:
                r = json.loads(line)
            except ValueError:
                continue
            m = r.get("message", "")
            if m == "epoch ready and serving":
                self.serving.add(r.get("epoch"))
            elif m.startswith("new epoch refused"):
                self.refused += 1
            elif m.startswith("serving epoch crashed"):
                self.crashed += 1

    def has_served(self, epoch):
        self.poll()
        return epoch in self.serving


def shm_entries():
    return set(os.listdir("/dev/shm"))


def sample(pid, private_dir, shm_before):
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    status = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            status[k] = v.strip()
    rss_mb = int(status["VmRSS"].split()[0]) / 1024
    threads = int(status["Threads"])
    shm = len(shm_entries() - shm_before)
    files = len(os.listdir(private_dir)) if os.path.isdir(private_dir) else 0
    return fds, rss_mb, threads, shm, files


def envoy_args(a, work, port):
    admin = free_port()
    cfg_dir = os.path.join(work, "cfg")
    args = ["envoy", "--envoy-binary", a.envoy, "--template", DIRECT,
            "--var", f"listen_port={port}", "--var", "listen_address=127.0.0.1",
            "--admin-port", str(admin), "--config-dir", cfg_dir, "--concurrency", "1",
            "--drain-duration", "1s", "--parent-shutdown-duration", "2s",
            "--stats-flush-interval", "250ms", "--termination-drain-duration", "1s"]
    return args, cfg_dir, {}


def run_args(port, run_flags, command):
    return ["run", "--listen", f"http=tcp://127.0.0.1:{port}",
            "--parent-shutdown-duration", "2s", "--termination-drain-duration", "1s",
            *run_flags, "--", *command]


def haproxy_args(a, work, port, upstream):
    cfg = haproxy_cfg(work, "soak-haproxy.cfg", None)
    args = run_args(port, ["--ready", "notify", "--drain-signal", "SIGUSR1"],
                    [a.haproxy, "-Ws", "-f", cfg])
    return args, None, {"UPSTREAM": upstream}


def nginx_args(a, work, port, upstream):
    cfg = nginx_cfg(work, "soak-nginx.conf", port)
    pid = os.path.join(work, "soak-nginx.{epoch}.pid")
    args = run_args(port, ["--ready", f"exec:test -s {pid}", "--drain-signal", "SIGQUIT"],
                    [a.nginx, "-c", cfg, "-g", f"pid {pid};"])
    return args, None, {}


def soak(procs, a, work, name, make_args, upstream):
    port, status = free_port(), free_port()
    args, private_dir, env = make_args(port, upstream)
    log_path = os.path.join(work, f"{name}-baton.log")
    log_file = open(log_path, "w")
    shm_before = shm_entries()
    # The status flag goes right after the subcommand: `baton run` ends with `-- COMMAND`.
    args = [args[0], "--status-addr", f"127.0.0.1:{status}", *args[1:]]
    baton = procs.popen(f"baton ({name})",
                        [a.baton, "--log-format", "json", "--log-level", "info", *args],
                        stdout=log_file, stderr=log_file,
                        env={**os.environ, "TMPDIR": work, **env})
    if private_dir is None:
        private_dir = os.path.join(work, f"baton-{baton.pid}-run")
    log = Log(log_path)
    rows = []
    try:
        wait_until("epoch 0 serving", lambda: log.has_served(0), timeout=60)
        rows.append((0, *sample(baton.pid, private_dir, shm_before)))
        # 1,000 Envoy restarts take about 1,350 s; wrk must outlast the slowest run.
        load = Load(procs, "wrk", port, 1, 8, seconds=a.restarts * 10 + 60)
        started = time.monotonic()
        for n in range(1, a.restarts + 1):
            baton.send_signal(signal.SIGHUP)
            wait_until(f"epoch {n} serving", lambda: log.has_served(n), timeout=60, poll=0.005)
            if n % a.every == 0:
                rows.append((n, *sample(baton.pid, private_dir, shm_before)))
                print(f"{name}: {n} restarts, {time.monotonic() - started:.0f} s", file=sys.stderr)
        load.check()
        res_load = load.stop()
        total, errors = res_load["requests"], res_load["errors"]
        code = procs.stop_popen(baton, signal.SIGTERM)
        log.poll()
        left_shm = sorted(shm_entries() - shm_before)
        left_files = sorted(os.listdir(private_dir)) if os.path.isdir(private_dir) else []
        return rows, dict(requests=total, errors=errors, code=code, refused=log.refused,
                          crashed=log.crashed, left_shm=left_shm, left_files=left_files,
                          seconds=time.monotonic() - started)
    finally:
        log_file.close()


def table(name, rows, res):
    out = [f"### {name}", "",
           "| restarts | fds | RSS (MB) | threads | /dev/shm entries | private dir files |",
           "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for n, fds, rss, threads, shm, files in rows:
        out.append(f"| {n} | {fds} | {rss:.1f} | {threads} | {shm} | {files} |")
    first, last = rows[1] if len(rows) > 1 else rows[0], rows[-1]
    out += ["",
            f"{res['requests']:,} requests under `wrk -t1 -c8` keep-alive, {res['errors']} wrk errors; "
            f"{res['refused']} new epochs refused, {res['crashed']} crashes; "
            f"{res['seconds']:.0f} s. RSS from restart {first[0]} to {last[0]}: "
            f"{first[2]:.1f} → {last[2]:.1f} MB. After SIGTERM: exit {res['code']}, "
            f"/dev/shm left {res['left_shm'] or 'nothing'}, private dir left {res['left_files'] or 'nothing'}.",
            ""]
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--restarts", type=int, default=1000)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--only", default="envoy,haproxy,nginx")
    ap.add_argument("--envoy", required=True)
    ap.add_argument("--baton", default=os.path.join(ROOT, "target", "release", "baton"))
    a = ap.parse_args()
    a.haproxy, a.nginx = tool("haproxy"), tool("nginx")
    become_subreaper()
    variants = {
        "envoy": ("baton envoy", lambda port, up: envoy_args(a, work, port)),
        "haproxy": ("baton run + HAProxy", lambda port, up: haproxy_args(a, work, port, up)),
        "nginx": ("baton run + nginx", lambda port, up: nginx_args(a, work, port, up)),
    }
    procs = Processes()
    work = tempfile.mkdtemp(prefix="baton-soak-")
    try:
        upstream = start_upstream(procs, a, work)
        for key in a.only.split(","):
            name, make = variants[key]
            rows, res = soak(procs, a, work, key, make, upstream)
            print(table(name, rows, res), flush=True)
    finally:
        procs.stop_all()
        subprocess.run(["rm", "-rf", work], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
