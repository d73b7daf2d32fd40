#!/usr/bin/env python3
"""How restarts grow with what baton holds: 1, 100 and 1,000 `--listen` sockets, and 1, 100
and 1,000 watched files. The anchor of each row is the 1-row of the same run.

listeners  `baton run` + HAProxy (examples/haproxy/haproxy.cfg with one `bind "fd@..."` per
           listener, all on 127.0.0.1 ports baton picks), upstream nginx; the load goes to the
           first listener. Restart: SIGHUP -> baton logs the new epoch serving. HAProxy runs
           as one process (`-db`), not master-worker: HAProxy 2.6's master (`-Ws`) dies of
           `fd >= global.maxsock` when handed 1,000 listener fds. Ready: the epoch's stats
           socket exists (`--ready exec:test -S .../stats.{epoch}.sock`), which HAProxy
           creates after binding.
files      `baton envoy` (scripts/benchmarks/direct.json, `--concurrency 1`) with `--watch` on N
           files spread over 10 directories; a restart is one watched file rewritten with new
           content. Restart: the write -> the new epoch LIVE on the admin API; baton's
           `detect_ms` (first event -> content known changed: N files hashed) beside it.

Before the load, baton idles for `--idle` seconds: its resident memory and wakeups per second
(voluntary + involuntary context switches of all its threads) are read then.

Usage: scripts/bench scale [--what listeners,files] [--sizes 1,100,1000] [--restarts 10]
                           [--json FILE]
"""

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time

import common
from common import JsonLog, Load, Processes, free_port, median, table, tool, wait_until

HAPROXY_EXAMPLE = os.path.join(common.ROOT, "examples", "haproxy", "haproxy.cfg")
TEMPLATE = os.path.join(common.BENCH_DIR, "direct.json")
UPSTREAM_CONF = """\
daemon off;
master_process on;
worker_processes 1;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    server {{ listen 127.0.0.1:{port}; location / {{ return 200 "upstream\\n"; }} }}
}}
"""


def idle(pid, seconds):
    """Resident memory (MB) and wakeups per second of `pid` over `seconds` of idling."""
    w0, c0, t0 = common.context_switches(pid), common.cpu_ticks(pid), time.monotonic()
    time.sleep(seconds)
    w1, c1, t1 = common.context_switches(pid), common.cpu_ticks(pid), time.monotonic()
    hz = os.sysconf("SC_CLK_TCK")
    return {"rss_mb": common.status_kb(pid, "VmRSS") / 1024,
            "wakeups_s": common.wakeups_between(w0, w1) / (t1 - t0),
            "cpu_pct": 100 * (c1 - c0) / hz / (t1 - t0)}


def serving(sup, log, epoch):
    """Whether baton logged `epoch` serving; an error once baton has exited."""
    if sup.poll() is not None:
        raise RuntimeError(f"baton exited with {sup.returncode} before epoch {epoch} served")
    return log.find("epoch ready and serving", epoch=epoch)


def listeners(a, procs, work, n, upstream):
    text = open(HAPROXY_EXAMPLE).read()
    bind = '    bind "fd@${BATON_FD_HTTP}"\n'
    assert bind in text, "examples/haproxy/haproxy.cfg changed its bind line"
    text = text.replace(bind, "".join(f'    bind "fd@${{BATON_FD_L{i}}}"\n' for i in range(n)))
    # HAProxy sizes its fd table (maxsock) from maxconn: leave room for n inherited fds.
    sock = os.path.join(work, f"stats-{n}" + ".{epoch}.sock")
    text = text.replace("global\n", f"global\n    maxconn {max(4096, 4 * n)}\n    stats socket "
                        f"\"{sock.replace('{epoch}', '${BATON_EPOCH}')}\" mode 600\n", 1)
    cfg = os.path.join(work, f"haproxy-{n}.cfg")
    with open(cfg, "w") as f:
        f.write(text)
    log_path = os.path.join(work, f"baton-listeners-{n}.log")
    out = open(log_path, "w")
    args = [a.baton, "--log-format", "json", "run",
            *[x for i in range(n) for x in ("--listen", f"l{i}=tcp://127.0.0.1:0")],
            "--status-addr", f"127.0.0.1:{free_port()}", "--parent-shutdown-duration", "5s",
            "--termination-drain-duration", "1s", "--ready", f"exec:test -S {sock}",
            "--drain-signal", "SIGUSR1", "--", a.haproxy, "-db", "-f", cfg]
    sup = procs.popen("baton", args, stdout=out, stderr=out,
                      env={**os.environ, "UPSTREAM": upstream})
    log = JsonLog(log_path)
    try:
        wait_until("epoch 0 serving", lambda: serving(sup, log, 0), 120)
        first = log.find("holding listener", listener="l0")
        port = int(first["address"].rsplit(":", 1)[1])
        res = idle(sup.pid, a.idle)

        def restart(epoch):
            t0 = time.monotonic()
            sup.send_signal(signal.SIGHUP)
            wait_until(f"epoch {epoch} serving", lambda: serving(sup, log, epoch), 120)
            return time.monotonic() - t0

        res.update(under_load(a, procs, port, restart, gap=0.5))
        res["logged_ms"] = [r["restart_ms"] for r in log.all("epoch ready and serving")
                            if r.get("epoch", 0) > 0]
        res["code"] = procs.stop_popen(sup, signal.SIGTERM)
        return res
    except Exception:
        print(f"--- last lines of baton's log:\n{common.tail(log_path)}", file=sys.stderr)
        raise
    finally:
        log.close()
        out.close()


def files(a, procs, work, n, _upstream):
    root = os.path.join(work, f"watched-{n}")
    paths = []
    for i in range(n):
        d = os.path.join(root, f"d{i % 10}")
        os.makedirs(d, exist_ok=True)
        p = os.path.join(d, f"f{i}")
        with open(p, "w") as f:
            f.write(f"file {i} version 0\n")
        paths.append(p)
    port, admin = free_port(), free_port()
    cfg_dir = os.path.join(work, f"cfg-files-{n}")
    log_path = os.path.join(work, f"baton-files-{n}.log")
    out = open(log_path, "w")
    args = [a.baton, "--log-format", "json", "envoy", "--envoy-binary", a.envoy,
            "--template", TEMPLATE, "--var", f"listen_port={port}",
            "--var", "listen_address=127.0.0.1", "--admin-port", str(admin),
            "--status-addr", f"127.0.0.1:{free_port()}", "--config-dir", cfg_dir,
            "--concurrency", "1", "--drain-duration", "1s", "--parent-shutdown-duration", "2s",
            "--stats-flush-interval", "250ms", "--termination-drain-duration", "1s",
            "--debounce", "20ms", *[x for p in paths for x in ("--watch", p)]]
    sup = procs.popen("baton", args, stdout=out, stderr=out)
    log = JsonLog(log_path)
    try:
        common.wait_live(admin, 0, 120)
        res = idle(sup.pid, a.idle)

        def restart(epoch):
            t0 = time.monotonic()
            with open(paths[epoch % n], "w") as f:
                f.write(f"file {epoch % n} version {epoch}\n")
            return common.wait_live(admin, epoch, 120) - t0

        res.update(under_load(a, procs, port, restart, gap=1.5))
        res["detect_ms"] = [r["detect_ms"] for r in log.all("watched content changed")]
        res["logged_ms"] = [r["restart_ms"] for r in log.all("epoch ready and serving")
                            if r.get("epoch", 0) > 0]
        res["code"] = procs.stop_popen(sup, signal.SIGTERM)
        return res
    except Exception:
        print(f"--- last lines of baton's log:\n{common.tail(log_path)}", file=sys.stderr)
        raise
    finally:
        log.close()
        out.close()


def under_load(a, procs, port, restart, gap):
    load = Load(procs, a.load, port, 1, 16)
    time.sleep(1)
    load.check()
    times = []
    for epoch in range(1, a.restarts + 1):
        times.append(restart(epoch))
        time.sleep(gap)
    time.sleep(1)
    res = load.stop()
    res["times"] = times
    return res


def start_upstream(a, procs, work):
    port = free_port()
    cfg = os.path.join(work, "upstream.conf")
    with open(cfg, "w") as f:
        f.write(UPSTREAM_CONF.format(port=port))
    procs.popen("upstream nginx", [a.nginx, "-c", cfg, "-g", f"pid {work}/upstream.pid;"],
                stop=signal.SIGQUIT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until("upstream answers", lambda: common.answers(port))
    return f"127.0.0.1:{port}"


CASES = {"listeners": ("`--listen` sockets", listeners), "files": ("watched files", files)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--what", default="listeners,files")
    ap.add_argument("--sizes", default="1,100,1000")
    ap.add_argument("--restarts", type=int, default=10)
    ap.add_argument("--idle", type=float, default=10.0, help="seconds of idling measured")
    ap.add_argument("--load", choices=("wrk", "loadgen"), default="wrk")
    ap.add_argument("--json", help="write every figure here")
    ap.add_argument("--baton", default=common.BATON)
    ap.add_argument("--envoy", required=True)
    a = ap.parse_args()
    a.haproxy, a.nginx = tool("haproxy"), tool("nginx")
    sizes = [int(x) for x in a.sizes.split(",")]
    load_before = common.load_average()
    procs = Processes()
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as work:
        try:
            upstream = start_upstream(a, procs, work)
            for what in a.what.split(","):
                label, fn = CASES[what]
                for n in sizes:
                    print(f"{n} {label}: {a.restarts} restarts, load {common.load_average()}",
                          file=sys.stderr, flush=True)
                    results[(what, n)] = fn(a, procs, work, n, upstream)
        finally:
            procs.stop_all()
    print(f"{a.restarts} restarts per row under `{a.load} -t1 -c16` (keep-alive); idle figures "
          f"over {a.idle:g} s before the load; load average before {load_before}, after "
          f"{common.load_average()}")
    for what in a.what.split(","):
        label, _ = CASES[what]
        base = results.get((what, sizes[0]))
        rows = []
        for n in sizes:
            r = results[(what, n)]
            p50 = median(r["times"])
            rows.append([f"{n:,} {label}", common.ms(p50), common.ms(max(r["times"])),
                         f"{p50 / median(base['times']):.2f}",
                         f"{median(r['logged_ms']):.0f} ms",
                         f"{median(r['detect_ms']):.0f} ms" if "detect_ms" in r else "-",
                         f"{r['requests']:,}", f"{r['errors']:,}", f"{r['rss_mb']:.1f} MB",
                         f"{r['wakeups_s']:.1f}", f"{r['cpu_pct']:.2f} %"])
        print()
        print(table([label, "restart p50", "max", f"p50 / {sizes[0]}'s", "baton restart_ms p50",
                     "detect_ms p50", "requests", "errors", "baton RSS idle",
                     "baton wakeups/s idle", "baton CPU idle"], rows))
    common.save_json(a.json, {"results": {f"{k[0]}-{k[1]}": v for k, v in results.items()},
                              "load": load_before})
    return 1 if any(r["code"] for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
