#!/usr/bin/env python3
"""Envoy hot restarts: baton against Envoy's own hot-restarter.py, in the same run.

The same Envoy, the same bootstrap (`baton render` of scripts/benchmarks/direct.json: a
listener answering 200 itself, `--concurrency 1`), the same flags (`--drain-time-s 1
--parent-shutdown-time-s 2`) and the same load (keep-alive, `-t1 -c16`) under:

  restarter  Envoy's hot-restarter.py (../shared/anchors/hot-restarter.py, benchmarks only,
             never part of the project) running a start script that execs Envoy with
             `--restart-epoch $RESTART_EPOCH`; SIGHUP to the restarter;
  baton      `baton envoy` (`--drain-duration 1s --parent-shutdown-duration 2s
             --stats-flush-interval 250ms`); SIGHUP to baton;
  cold       plain Envoy without hot restart: SIGTERM, wait for it to exit, start it again.

Per restart: signal -> the new epoch LIVE on the admin API (the gauges `server.state` 0 and
`server.hot_restart_epoch` of the new epoch, polled every 2 ms; not `/server_info`, 125 KB of
JSON whose building at that rate would slow the start measured). Per variant: requests and
errors of the load, the supervisor's resident memory (VmRSS at the end, peak VmHWM), and for
baton its own log fields (trigger -> spawn, spawn -> ready). Variants run one after the other, `--rounds` times; the
restarter is the anchor: ratios are against the restarter of the same round.

Usage: scripts/bench envoy [--restarts 10] [--gap 3] [--rounds 1] [--load wrk|loadgen]
                           [--timelines DIR] [--json FILE]
"""

import argparse
import os
import signal
import stat
import sys
import tempfile
import time

import common
from common import Load, Processes, free_port, median, pct, table

TEMPLATE = os.path.join(common.BENCH_DIR, "direct.json")
RESTARTER = os.path.normpath(os.path.join(common.ROOT, "..", "shared", "anchors", "hot-restarter.py"))
LEAD = 1.0  # load runs this long before the first restart
TAIL = 1.0  # and this long after the last restart's gap
FLAGS = ["--drain-time-s", "1", "--parent-shutdown-time-s", "2", "--service-cluster", "baton",
         "--local-address-ip-version", "v4", "-l", "warning", "--concurrency", "1"]

START_SCRIPT = """#!/bin/sh
# hot-restarter.py runs this for every epoch with RESTART_EPOCH set.
if [ "$RESTART_EPOCH" = 0 ]; then
    exec {envoy} -c {cfg} --restart-epoch 0 {flags} --use-dynamic-base-id --base-id-path {base}
fi
exec {envoy} -c {cfg} --restart-epoch "$RESTART_EPOCH" {flags} --base-id "$(cat {base})"
"""


def restarter(a, procs, work, n):
    port, admin = free_port(), free_port()
    cfg = common.render(a.baton, TEMPLATE, port, admin, os.path.join(work, f"plain{n}.json"))
    base = os.path.join(work, f"base-id.{n}")
    script = os.path.join(work, f"start-envoy{n}.sh")
    with open(script, "w") as f:
        f.write(START_SCRIPT.format(envoy=a.envoy, cfg=cfg, flags=" ".join(FLAGS), base=base))
    os.chmod(script, stat.S_IRWXU)
    log = open(os.path.join(work, f"restarter{n}.log"), "w")
    sup = procs.popen("hot-restarter.py", [sys.executable, RESTARTER, script],
                      stdout=log, stderr=log)
    try:
        return sighups(a, procs, work, f"restarter{n}", sup, admin, port)
    finally:
        log.close()
        try:
            common.remove_envoy_shm([open(base).read()])
        except OSError:
            pass


def sighups(a, procs, work, tag, sup, admin, port):
    """SIGHUP `sup` once per restart under load, each time until the next epoch is LIVE; then
    its memory, and its exit code after SIGTERM."""
    common.wait_live(admin, 0)

    def restart(epoch):
        t0 = time.monotonic()
        sup.send_signal(signal.SIGHUP)
        return common.wait_live(admin, epoch) - t0

    res = under_load(a, procs, work, tag, port, restart)
    res["rss_kb"] = common.status_kb(sup.pid, "VmRSS")
    res["hwm_kb"] = common.status_kb(sup.pid, "VmHWM")
    res["code"] = procs.stop_popen(sup, signal.SIGTERM)
    return res


def baton(a, procs, work, n):
    port, admin, status = free_port(), free_port(), free_port()
    cfg_dir = os.path.join(work, f"cfg{n}")
    log_path = os.path.join(work, f"baton{n}.log")
    out = open(log_path, "w")
    sup = procs.popen(
        "baton",
        [a.baton, "--log-format", "json", "envoy", "--envoy-binary", a.envoy, "--template", TEMPLATE,
         "--var", f"listen_port={port}", "--var", "listen_address=127.0.0.1",
         "--admin-port", str(admin), "--status-addr", f"127.0.0.1:{status}",
         "--config-dir", cfg_dir, "--concurrency", "1",
         "--drain-duration", "1s", "--parent-shutdown-duration", "2s",
         "--stats-flush-interval", "250ms", "--termination-drain-duration", "1s"],
        stdout=out, stderr=out)
    log = common.JsonLog(log_path)
    try:
        res = sighups(a, procs, work, f"baton{n}", sup, admin, port)
        served = [r for r in log.all("epoch ready and serving") if r.get("epoch", 0) > 0]
        res["restart_ms"] = [r["restart_ms"] for r in served]
        res["startup_ms"] = [r["startup_ms"] for r in served]
        res["spawn_ms"] = [r["restart_ms"] - r["startup_ms"] for r in served]
        res["validated"] = len(served) - len(log.all("envoy --mode validate skipped"))
        res["deferred"] = len(log.all("restart waits"))
        return res
    except Exception:
        print(f"--- last lines of baton's log:\n{common.tail(log_path)}", file=sys.stderr)
        raise
    finally:
        log.close()
        out.close()


def cold(a, procs, work, n):
    port, admin = free_port(), free_port()
    cfg = common.render(a.baton, TEMPLATE, port, admin, os.path.join(work, f"cold{n}.json"))
    args = [a.envoy, "-c", cfg, *FLAGS, "--disable-hot-restart"]
    log = open(os.path.join(work, f"cold{n}.log"), "w")
    current = [procs.popen("envoy", args, stdout=log, stderr=log)]
    try:
        common.wait_live(admin, 0)

        def restart(epoch):
            t0 = time.monotonic()
            procs.stop_popen(current[0], signal.SIGTERM)
            current[0] = procs.popen("envoy", args, stdout=log, stderr=log)
            return common.wait_live(admin, 0) - t0

        res = under_load(a, procs, work, f"cold{n}", port, restart)
        res["code"] = procs.stop_popen(current[0], signal.SIGTERM)
        return res
    finally:
        log.close()


def under_load(a, procs, work, tag, port, restart):
    timeline = os.path.join(a.timelines, f"envoy-{tag}.json") if a.timelines else None
    load = Load(procs, a.load, port, 1, 16, timeline=timeline)
    time.sleep(LEAD)
    load.check()
    times, marks = [], []
    for epoch in range(1, a.restarts + 1):
        marks.append(time.time())
        times.append(restart(epoch))
        time.sleep(a.gap)
    time.sleep(TAIL)
    res = load.stop()
    res.update(times=times, marks=marks, timeline=timeline)
    if timeline:
        common.add_marks(timeline, marks)
    return res


VARIANTS = [("restarter", "Envoy's hot-restarter.py (anchor)", restarter),
            ("baton", "baton envoy", baton),
            ("cold", "plain Envoy, cold restarts", cold)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--restarts", type=int, default=10)
    ap.add_argument("--gap", type=float, default=3.0, help="seconds after each restart is LIVE")
    ap.add_argument("--rounds", type=int, default=1, help="run every variant this many times")
    ap.add_argument("--load", choices=("wrk", "loadgen"), default="wrk")
    ap.add_argument("--timelines", help="directory for loadgen timelines (implies --load loadgen)")
    ap.add_argument("--only", default="", help="comma-separated variants")
    ap.add_argument("--json", help="write every figure here")
    ap.add_argument("--baton", default=common.BATON)
    ap.add_argument("--envoy", required=True)
    a = ap.parse_args()
    if a.timelines:
        a.load = "loadgen"
        os.makedirs(a.timelines, exist_ok=True)
    chosen = [v for v in VARIANTS if not a.only or v[0] in a.only.split(",")]
    load_before = common.load_average()
    procs = Processes()
    rounds = []
    with tempfile.TemporaryDirectory(prefix="bench-envoy-") as work:
        try:
            for n in range(a.rounds):
                got = {}
                for key, name, fn in chosen:
                    print(f"[round {n + 1}] {name}: {a.restarts} restarts, load "
                          f"{common.load_average()}", file=sys.stderr, flush=True)
                    got[key] = fn(a, procs, work, n)
                rounds.append(got)
        finally:
            procs.stop_all()
    report(a, chosen, rounds, load_before)
    common.save_json(a.json, {"rounds": rounds, "load": load_before})
    bad = [r["baton"] for r in rounds if "baton" in r and (r["baton"]["errors"] or r["baton"]["code"])]
    return 1 if bad else 0


def report(a, chosen, rounds, load_before):
    print(f"{a.restarts} restarts per variant, {a.gap:g} s apart, load `{a.load} -t1 -c16` "
          f"(keep-alive); Envoy --concurrency 1; {len(rounds)} round(s); "
          f"load average before {load_before}, after {common.load_average()}")
    print()
    rows = []
    for n, got in enumerate(rounds):
        anchor = got.get("restarter")
        for key, name, _ in chosen:
            r = got[key]
            p50 = median(r["times"])
            ratio = f"{p50 / median(anchor['times']):.2f}" if anchor else "-"
            rss = f"{r['rss_kb'] / 1024:.1f} MB" if r.get("rss_kb") else "-"
            rows.append([f"{name}" + (f" (round {n + 1})" if len(rounds) > 1 else ""),
                         f"{r['requests']:,}", f"{r['errors']:,}", common.ms(p50),
                         common.ms(max(r["times"])), ratio, rss])
    print(table(["variant", "requests", "errors", "signal → new epoch LIVE, p50", "max",
                 "p50 / restarter's", "supervisor RSS"], rows))
    bat = [got["baton"] for got in rounds if "baton" in got]
    if bat:
        spawn = [x for r in bat for x in r["spawn_ms"]]
        startup = [x for r in bat for x in r["startup_ms"]]
        total = [x for r in bat for x in r["restart_ms"]]
        print()
        print(f"baton's own log, {len(spawn)} restarts: trigger -> spawn p50 {pct(spawn, .5):.0f} ms "
              f"(max {max(spawn)}), spawn -> ready seen p50 {pct(startup, .5):.0f} ms, "
              f"trigger -> serving p50 {pct(total, .5):.0f} ms; "
              f"envoy --mode validate run {sum(r['validated'] for r in bat)} time(s), "
              f"restarts deferred {sum(r['deferred'] for r in bat)}; "
              f"peak RSS {max(r['hwm_kb'] for r in bat) / 1024:.1f} MB; "
              f"exit codes {[r['code'] for r in bat]}")
    rs = [got["restarter"] for got in rounds if "restarter" in got]
    if rs:
        print(f"restarter: peak RSS {max(r['hwm_kb'] for r in rs) / 1024:.1f} MB")


if __name__ == "__main__":
    sys.exit(main())
