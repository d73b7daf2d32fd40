#!/usr/bin/env python3
"""Generic driver benchmark: failed requests across hot restarts of HAProxy and nginx.

Side by side in one run, with the same wrk load (`wrk -t2 -c32`), the same number of restarts
and the same gap after each:
  1. baton run + HAProxy (examples/haproxy/haproxy.cfg, listener held by baton, `--ready notify
     --drain-signal SIGUSR1 -- haproxy -Ws -f CFG`): SIGHUP to baton, wait for baton's JSON log
     "epoch ready and serving" with the new epoch;
  2. HAProxy's own reload without socket transfer: the same config binding the port itself,
     `haproxy -D -p PIDFILE -f CFG -sf <old pids>` (the new process binds with SO_REUSEPORT,
     then tells the old ones to finish); a reload is done when that command returns;
  3. HAProxy's own reload with socket transfer: as 2, with `stats socket ... expose-fd
     listeners` in global and `-x SOCK` on every reload;
  4. nginx's own reload (examples/nginx/nginx.conf binding the port itself; SIGHUP to the
     master, as `nginx -s reload` sends); a reload is done when a new worker exists;
  5. baton run + nginx (examples/nginx/nginx.conf on the listener held by baton, `--ready
     exec:test -s PIDFILE_{epoch} --drain-signal SIGQUIT`), as 1.

HAProxy's upstream (all three HAProxy variants) is one nginx answering `return 200` on its own
port, started by this script. wrk runs with a long -d and is stopped with SIGINT (it then
prints its totals) one second after the last restart's gap; its errors are connect, read,
write and timeout errors plus non-2xx answers.

wrk keeps connections alive and never retries: when a draining proxy closes an idle
keep-alive connection on which wrk has already sent its next request, wrk counts a read
error (a real HTTP client re-sends such a request). `--connection-close` makes wrk open a
new connection per request, which leaves only connections really lost (e.g. reset in the
accept queue of a process that stops listening).

Everything listens on 127.0.0.1 ports chosen free; every process started is stopped by PID
(this script makes itself a child subreaper, so daemonized HAProxy processes stay its
children); the temporary directory is removed, also on failure.
Usage: scripts/bench generic [--restarts N] [--gap S] [--connection-close] [--only 1,3]
                             [--keep-logs DIR]
"""

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import common
from common import (JsonLog, Load, Processes, alive, answers, children, free_port, tail, tool,
                    wait_until)

HAPROXY_EXAMPLE = os.path.join(common.ROOT, "examples", "haproxy", "haproxy.cfg")
NGINX_EXAMPLE = os.path.join(common.ROOT, "examples", "nginx", "nginx.conf")
LEAD = 1.0  # load runs this long before the first restart
TAIL = 1.0  # and this long after the last restart's gap

UPSTREAM_CONF = """\
daemon off;
master_process on;
worker_processes 1;
error_log stderr warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            return 200 "hello from the upstream\\n";
        }}
    }}
}}
"""


def read_pids(path):
    try:
        with open(path) as f:
            return [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        return []


def under_load(a, procs, tag, port, restarts, gap, restart):
    """Load against port; `restart(n)` does restart n and returns once it is complete, with
    its duration in seconds. Returns the durations, the restart phase's length, the totals."""
    wait_until("port answers", lambda: answers(port))
    timeline = os.path.join(a.timelines, f"generic-{tag}.json") if a.timelines else None
    load = Load(procs, a.load, port, a.threads, a.connections, timeline=timeline,
                connection_close=a.connection_close)
    time.sleep(LEAD)
    load.check()
    times, marks = [], []
    t0 = time.monotonic()
    for n in range(1, restarts + 1):
        marks.append(time.time())
        times.append(restart(n))
        time.sleep(gap)
    phase = time.monotonic() - t0
    time.sleep(TAIL)
    res = load.stop()
    if timeline:
        common.add_marks(timeline, marks)
    return times, phase, res


# ---------------------------------------------------------------- variants


def haproxy_cfg(work, name, port, expose_sock=None):
    text = open(HAPROXY_EXAMPLE).read()
    bind = 'bind "fd@${BATON_FD_HTTP}"'
    assert bind in text, "examples/haproxy/haproxy.cfg changed its bind line"
    if port is not None:
        text = text.replace(bind, f"bind 127.0.0.1:{port}")
    if expose_sock:
        text = text.replace(
            "global\n", f"global\n    stats socket {expose_sock} mode 600 level admin expose-fd listeners\n", 1
        )
    path = os.path.join(work, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def nginx_cfg(work, name, port):
    text = open(NGINX_EXAMPLE).read()
    assert "127.0.0.1:8080" in text, "examples/nginx/nginx.conf changed its listen line"
    path = os.path.join(work, name)
    with open(path, "w") as f:
        f.write(text.replace("127.0.0.1:8080", f"127.0.0.1:{port}"))
    return path


def baton_variant(procs, a, work, tag, port, run_flags, command, env, restarts, gap):
    status = free_port()
    log_path = os.path.join(work, f"{tag}-baton.log")
    log_file = open(log_path, "w")
    args = [a.baton, "--log-format", "json", "run",
            "--listen", f"http=tcp://127.0.0.1:{port}",
            "--status-addr", f"127.0.0.1:{status}",
            "--parent-shutdown-duration", "5s",
            "--termination-drain-duration", "1s",
            *run_flags, "--", *command]
    baton = procs.popen(f"baton ({tag})", args, stdout=log_file, stderr=log_file,
                        env={**os.environ, **env})
    log = JsonLog(log_path)
    logged = []
    try:
        wait_until("epoch 0 serving", lambda: log.find("epoch ready and serving", epoch=0))

        def restart(n):
            t0 = time.monotonic()
            baton.send_signal(signal.SIGHUP)
            rec = wait_until(f"epoch {n} serving",
                             lambda: log.find("epoch ready and serving", epoch=n))
            logged.append(rec.get("restart_ms", 0) / 1000)
            return time.monotonic() - t0

        times, phase, res = under_load(a, procs, tag, port, restarts, gap, restart)
        code = procs.stop_popen(baton, signal.SIGTERM)
        log.poll()
        exits = [r for r in log.records if "epoch exited" in r.get("message", "")]
        killed = [r for r in exits if "signal 9" in str(r.get("status", ""))]
        refused = [r for r in log.records if "refused" in r.get("message", "")]
        notes = []
        if killed:
            which = ", ".join(f"{r.get('epoch')} ({r.get('role', '?')})" for r in killed)
            notes.append(f"{len(killed)} epoch(s) ended by SIGKILL: {which}")
        if refused:
            notes.append(f"{len(refused)} new epoch(s) refused")
        if code != 0:
            notes.append(f"baton exit code {code} after SIGTERM")
        res.update(times=times, phase=phase, logged=logged, notes=notes, code=code)
        return res
    except Exception:
        print(f"--- last lines of {tag}'s baton log:\n{tail(log_path)}", file=sys.stderr)
        raise
    finally:
        log.close()
        log_file.close()


def v_baton_haproxy(procs, a, work, upstream, restarts, gap):
    cfg = haproxy_cfg(work, "baton-haproxy.cfg", None)
    return baton_variant(
        procs, a, work, "baton-haproxy", free_port(),
        ["--ready", "notify", "--drain-signal", "SIGUSR1"],
        [a.haproxy, "-Ws", "-f", cfg], {"UPSTREAM": upstream}, restarts, gap)


def haproxy_native(procs, a, work, upstream, restarts, gap, transfer):
    tag = "haproxy-x" if transfer else "haproxy-sf"
    port = free_port()
    sock = os.path.join(work, f"{tag}-admin.sock") if transfer else None
    cfg = haproxy_cfg(work, f"{tag}.cfg", port, sock)
    pidfile = os.path.join(work, f"{tag}.pid")
    env = {**os.environ, "UPSTREAM": upstream}
    base = [a.haproxy, "-D", "-p", pidfile, "-f", cfg]
    errlog = os.path.join(work, f"{tag}.log")

    def launch(extra):
        with open(errlog, "a") as err:
            r = subprocess.run(base + extra, env=env, stdout=err, stderr=err, timeout=common.STEP_TIMEOUT)
        pids = read_pids(pidfile)
        for p in pids:
            procs.adopt(p, "haproxy")
        if r.returncode != 0 or not pids:
            raise RuntimeError(f"{' '.join(base + extra)} failed ({r.returncode}):\n{tail(errlog)}")
        return pids

    current = launch([])

    def restart(n):
        nonlocal current
        old = [p for p in current if alive(p)]
        extra = (["-x", sock] if transfer else []) + ["-sf", *map(str, old)]
        t0 = time.monotonic()
        current = launch(extra)
        took = time.monotonic() - t0
        for p in list(procs.pids):  # reap old processes that have finished
            alive(p)
        return took

    times, phase, res = under_load(a, procs, tag, port, restarts, gap, restart)
    lingering = sum(1 for p in procs.pids if alive(p) and p not in current)
    notes = [f"{lingering} old process(es) still finishing at the end"] if lingering else []
    procs.stop_pids()
    res.update(times=times, phase=phase, logged=None, notes=notes)
    return res


def v_haproxy_sf(procs, a, work, upstream, restarts, gap):
    return haproxy_native(procs, a, work, upstream, restarts, gap, transfer=False)


def v_haproxy_x(procs, a, work, upstream, restarts, gap):
    return haproxy_native(procs, a, work, upstream, restarts, gap, transfer=True)


def v_nginx_reload(procs, a, work, upstream, restarts, gap):
    port = free_port()
    cfg = nginx_cfg(work, "nginx-reload.conf", port)
    pidfile = os.path.join(work, "nginx-reload.pid")
    errlog = open(os.path.join(work, "nginx-reload.log"), "w")
    master = procs.popen("nginx (reload)", [a.nginx, "-c", cfg, "-g", f"pid {pidfile};"],
                         stop=signal.SIGQUIT, stdout=errlog, stderr=errlog)
    try:
        wait_until("nginx pid file", lambda: read_pids(pidfile) == [master.pid])
        wait_until("nginx worker", lambda: children(master.pid))

        def restart(n):
            before = set(children(master.pid))
            t0 = time.monotonic()
            master.send_signal(signal.SIGHUP)
            wait_until(f"new nginx worker after reload {n}",
                       lambda: set(children(master.pid)) - before)
            took = time.monotonic() - t0
            if master.poll() is not None:
                raise RuntimeError("the nginx master exited")
            return took

        times, phase, res = under_load(a, procs, "nginx-reload", port, restarts, gap, restart)
        lingering = len(children(master.pid)) - 1
        notes = [f"{lingering} old worker(s) still finishing at the end"] if lingering > 0 else []
        code = procs.stop_popen(master, signal.SIGQUIT)
        if code != 0:
            notes.append(f"nginx master exit code {code}")
        res.update(times=times, phase=phase, logged=None, notes=notes)
        return res
    finally:
        errlog.close()


def v_baton_nginx(procs, a, work, upstream, restarts, gap):
    # nginx adopts baton's socket only when its `listen` address matches --listen exactly.
    port = free_port()
    cfg = nginx_cfg(work, "baton-nginx.conf", port)
    pid = os.path.join(work, "baton-nginx.{epoch}.pid")
    return baton_variant(
        procs, a, work, "baton-nginx", port,
        ["--ready", f"exec:test -s {pid}", "--drain-signal", "SIGQUIT"],
        [a.nginx, "-c", cfg, "-g", f"pid {pid};"], {}, restarts, gap)


VARIANTS = [
    ("1", "baton run + HAProxy (SIGHUP)", v_baton_haproxy),
    ("2", "HAProxy -sf, no socket transfer", v_haproxy_sf),
    ("3", "HAProxy -x -sf, socket transfer", v_haproxy_x),
    ("4", "nginx own reload (SIGHUP master)", v_nginx_reload),
    ("5", "baton run + nginx (SIGHUP)", v_baton_nginx),
]


def start_upstream(procs, a, work):
    port = free_port()
    cfg = os.path.join(work, "upstream.conf")
    with open(cfg, "w") as f:
        f.write(UPSTREAM_CONF.format(port=port))
    errlog = open(os.path.join(work, "upstream.log"), "w")
    procs.popen("upstream nginx", [a.nginx, "-c", cfg, "-g", f"pid {work}/upstream.pid;"],
                stop=signal.SIGQUIT, stdout=errlog, stderr=errlog)
    errlog.close()
    wait_until("upstream answers", lambda: answers(port))
    return f"127.0.0.1:{port}"


def ms(xs):
    if not xs:
        return "-"
    return f"{statistics.median(xs) * 1000:.0f} ({max(xs) * 1000:.0f})"


# Each baton variant and the proxy's own reload it is compared with.
ANCHOR_OF = {"1": "3", "5": "4"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--restarts", type=int, default=100)
    ap.add_argument("--gap", type=float, default=0.2, help="seconds after each completed restart")
    ap.add_argument("--connection-close", action="store_true",
                    help="the load sends `Connection: close` (a new connection per request) "
                         "instead of keeping connections alive")
    ap.add_argument("--load", choices=("wrk", "loadgen"), default="wrk")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--timelines", help="directory for loadgen timelines (implies --load loadgen)")
    ap.add_argument("--only", default="", help="comma-separated variant numbers, e.g. 1,2")
    ap.add_argument("--keep-logs", metavar="DIR", help="copy baton's and the proxies' logs here")
    ap.add_argument("--json", help="write every figure here")
    ap.add_argument("--baton", default=common.BATON)
    a = ap.parse_args()
    if a.timelines:
        a.load = "loadgen"
        os.makedirs(a.timelines, exist_ok=True)
    a.haproxy, a.nginx = tool("haproxy"), tool("nginx")
    chosen = [v for v in VARIANTS if not a.only or v[0] in a.only.split(",")]

    common.become_subreaper()
    procs = Processes()
    work = tempfile.mkdtemp(prefix="bench-generic-")
    load_before = common.load_average()
    results = []
    try:
        upstream = start_upstream(procs, a, work)
        for num, name, fn in chosen:
            print(f"[{num}] {name}: {a.restarts} restarts, load {common.load_average()}",
                  file=sys.stderr, flush=True)
            t0 = time.monotonic()
            res = fn(procs, a, work, upstream, a.restarts, a.gap)
            res["wall"] = time.monotonic() - t0
            print(f"[{num}] done in {res['wall']:.1f}s: {res['requests']} requests, "
                  f"{res['errors']} errors", file=sys.stderr, flush=True)
            results.append((num, name, res))
    finally:
        procs.stop_all()
        if a.keep_logs:
            os.makedirs(a.keep_logs, exist_ok=True)
            for name in os.listdir(work):
                if name.endswith(".log"):
                    shutil.copy(os.path.join(work, name), a.keep_logs)
        shutil.rmtree(work, ignore_errors=True)
    report(a, results, load_before)
    common.save_json(a.json, {"results": results, "load": load_before})
    # The load's errors are the measurement, not a failure; a baton that does not exit 0 is.
    return 1 if any(r.get("code") for _, _, r in results) else 0


def report(a, results, load_before):
    hv = subprocess.run([a.haproxy, "-v"], capture_output=True, text=True).stdout.split("\n")[0]
    nv = subprocess.run([a.nginx, "-v"], capture_output=True, text=True).stderr.strip()
    mode = " -H 'Connection: close'" if a.connection_close else " (keep-alive)"
    print(f"{a.restarts} restarts per variant, {a.gap}s after each completed restart; "
          f"`{a.load} -t{a.threads} -c{a.connections}`{mode}, from {LEAD:.0f}s before the first "
          f"restart to {TAIL:.0f}s after the last; {hv.split(' - ')[0]}; {nv}; "
          f"{os.cpu_count()} cores; load average before {load_before}, "
          f"after {common.load_average()}")
    print()
    by_num = {num: r for num, _, r in results}
    rows = []
    for num, name, r in results:
        rate = r["errors"] / r["requests"] if r["requests"] else 0.0
        detail = "/".join(str(r[k]) for k in ("connect", "read", "write", "timeout", "non2xx"))
        anchor = by_num.get(ANCHOR_OF.get(num))
        ratio = "-"
        if anchor:
            ratio = f"{statistics.median(r['times']) / statistics.median(anchor['times']):.2f}"
        rows.append([f"{num}. {name}", len(r["times"]), ms(r["times"]), ratio,
                     f"{r['requests']:,}", f"**{r['errors']:,}**", f"{rate:.4%}", detail])
    print(common.table(["variant", "restarts", "restart median (max) ms",
                        "restart time / anchor's", "requests", "errors", "error rate",
                        "connect/read/write/timeout/non-2xx"], rows))
    print()
    print("restart = SIGHUP -> baton logs the new epoch serving (1, 5); `haproxy -D ... -sf` "
          "returns (2, 3); SIGHUP -> a new nginx worker exists (4). Anchors: 1 against 3, "
          "5 against 4.")
    for num, name, r in results:
        extra = []
        if r.get("logged"):
            extra.append(f"baton's restart_ms median {statistics.median(r['logged']) * 1000:.0f} ms")
        extra.append(f"variant took {r['wall']:.1f} s in all, the load ran {r['load_s']:.1f} s")
        extra.extend(r["notes"])
        print(f"  {num}: " + "; ".join(extra))


if __name__ == "__main__":
    sys.exit(main())
