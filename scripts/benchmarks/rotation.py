#!/usr/bin/env python3
"""Certificate rotation benchmark: Kubernetes-style `..data` swap -> new certificate served,
side by side for `--cert-rotation restart` (a hot restart onto the new pair) and
`--cert-rotation sds` (the pair handed to the serving Envoy in place through SDS), with an
anchor measured in the same run: Envoy's own hot restart under hot-restarter.py.

baton runs the real Envoy (embedded `standalone` template, TLS listener on 127.0.0.1) with
`--cert <secret>/tls.crt:<secret>/tls.key`. The secret directory is laid out as the kubelet does
it: `..<ts>/tls.{crt,key}`, `..data -> ..<ts>`, `tls.crt -> ..data/tls.crt`, and so on. Each
rotation writes a new `..<ts2>` with the next EC P-256 certificate, swaps `..data` atomically
(symlink `..data_tmp`, rename over `..data`), and removes the old directory.

Measured per rotation, for each mode M and `--debounce` setting D:
  * swap -> new certificate served: TLS handshakes to the listener every ~2 ms until the peer
    certificate (DER) is the new one (external, end to end);
  * swap -> decided: the timestamp of baton's "watched content changed" record (its
    `detect_ms` field is first file event -> decision);
  * baton's own figure: `restart_ms` (trigger -> new epoch serving, restart mode, with its
    `startup_ms`, spawn -> ready) or `rotation_ms` (request -> Envoy's /certs lists the new
    leaf, sds mode);
  * restart mode: how many restarts found their bootstrap validated ahead (during the quiet
    period) or skipped validation as identical to one that served (the `..data` swap keeps
    the paths, so the bootstrap is unchanged), from baton's records saying so.
D, the quiet period, is printed beside the figures: they read as "D + x ms".

The anchor: Envoy's own hot restart onto the next certificate under Envoy's hot-restarter.py
(../shared/anchors, benchmarks only, run in place) with the same bootstrap (`baton render` with
`--cert`, rewritten before each SIGHUP, not timed): SIGHUP -> the new certificate served, polled
the same way, under the same load. "Served at D + Envoy's start" means baton's x is this anchor.
`--rounds R` splits the rotations into R rounds, each running the anchor and then every
setting, so a change in the machine's load lands on all of them alike.

TLS load the whole time, anchor included: `wrk -t1 -c8 -H "Connection: close"` to a loopback
upstream answering 200, so every request is a new TLS handshake; its connect/read/write/timeout
errors and non-2xx answers count as failed handshakes, with those of the 2 ms poller.

Between rotations the script waits for the rotation to be done (restart: "epoch ready and
serving"; sds: "certificate rotated in place"; anchor: the new restart epoch LIVE on Envoy's
admin API) and then 1.5 s more, every handshake of which must serve the new certificate: baton
defers a restart until the previous epoch has drained for --drain-duration plus one stats
flush (1 s + 250 ms here); rotating earlier would only measure that wait (sds mode never waits
for it, which is one of its advantages, but the comparison is of the rotation itself).

Everything listens on 127.0.0.1 ports chosen free; every process started is stopped.
Usage: scripts/bench rotation [--rotations N] [--rounds R] [--mode restart --mode sds]
                              [--debounce 20ms --debounce 100ms] [--json FILE]
"""

import argparse
import concurrent.futures
import datetime
import os
import re
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import common
from common import free_port, pct

ROOT = common.ROOT
RESTARTER = os.path.normpath(os.path.join(ROOT, "..", "shared", "anchors", "hot-restarter.py"))
START_SCRIPT = """#!/bin/sh
# hot-restarter.py runs this for every epoch with RESTART_EPOCH set.
if [ "$RESTART_EPOCH" = 0 ]; then
    exec {envoy} -c {cfg} --restart-epoch 0 {flags} --use-dynamic-base-id --base-id-path {base}
fi
exec {envoy} -c {cfg} --restart-epoch "$RESTART_EPOCH" {flags} --base-id "$(cat {base})"
"""
FLAGS = ("--drain-time-s 1 --parent-shutdown-time-s 2 --service-cluster baton "
         "--local-address-ip-version v4 -l warning --concurrency 1")
POLL = 0.002          # seconds between handshake attempts
SETTLE = 1.5          # seconds after each rotation (> --drain-duration 1s + one 250 ms flush)
ROTATION_TIMEOUT = 30.0
MODES = ("restart", "sds")
# The record that says a rotation is done, and the field with baton's own duration.
DONE = {
    "restart": ("epoch ready and serving", "restart_ms"),
    "sds": ("certificate rotated in place: envoy serves the new pair", "rotation_ms"),
}
# An epoch refused (restart mode) or a rotation in place refused (sds mode); a memory check's
# refusal is reported again as "new epoch refused", so it is not counted apart.
REFUSED = ("new epoch refused", "certificate rotation refused")
# The info record of a restart whose bootstrap was validated during the quiet period (the
# debug record "bootstrap validated ahead" is the validation itself, not its use).
AHEAD = "bootstrap validated ahead (while the restart waited)"
# A swap behind unchanged paths renders the bootstrap that serves: no validation to do at all.
SKIPPED = "bootstrap identical to one that served"
NA = "–"  # a cell that does not apply


def parse_duration_ms(text):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s)", text)
    if not m:
        raise argparse.ArgumentTypeError(f"duration like 20ms or 1s, not {text!r}")
    return float(m.group(1)) * (1000 if m.group(2) == "s" else 1)


def parse_timestamp(text):
    """RFC 3339 UTC (any number of fractional digits) -> seconds since the epoch."""
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text)
    if not m:
        raise ValueError(f"unexpected timestamp {text!r}")
    base = datetime.datetime.fromisoformat(m.group(1) + ("+00:00" if m.group(3) == "Z" else m.group(3)))
    frac = float("0." + m.group(2)) if m.group(2) else 0.0
    return base.timestamp() + frac


# --- certificates and the secret volume -------------------------------------------------------

def gen_cert(out_dir, serial):
    key = os.path.join(out_dir, f"{serial}.key")
    crt = os.path.join(out_dir, f"{serial}.crt")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", key, "-out", crt, "-subj", "/CN=localhost",
         "-set_serial", str(serial), "-days", "1"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    with open(crt) as f:
        crt_pem = f.read()
    with open(key) as f:
        key_pem = f.read()
    return crt_pem, key_pem, ssl.PEM_cert_to_DER_cert(crt_pem)


def gen_certs(out_dir, count, first_serial):
    os.makedirs(out_dir)
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda i: gen_cert(out_dir, first_serial + i), range(count)))


class Secret:
    """A Kubernetes-style secret volume: `..<ts>` dirs, `..data` swapped by rename."""

    def __init__(self, path):
        self.path = path
        self.seq = 0
        self.current = None
        os.makedirs(path)

    def _write_version(self, cert):
        self.seq += 1
        name = "..{}_{:04d}".format(time.strftime("%Y_%m_%d_%H_%M_%S", time.gmtime()), self.seq)
        d = os.path.join(self.path, name)
        os.mkdir(d, 0o755)
        crt_pem, key_pem, _ = cert
        with open(os.path.join(d, "tls.crt"), "w") as f:
            f.write(crt_pem)
        with open(os.path.join(d, "tls.key"), "w") as f:
            f.write(key_pem)
        return name

    def init(self, cert):
        self.current = self._write_version(cert)
        os.symlink(self.current, os.path.join(self.path, "..data"))
        os.symlink("..data/tls.crt", os.path.join(self.path, "tls.crt"))
        os.symlink("..data/tls.key", os.path.join(self.path, "tls.key"))

    def rotate(self, cert):
        """The kubelet's atomic update; returns time.time() taken right before it."""
        t0 = time.time()
        new = self._write_version(cert)
        tmp = os.path.join(self.path, "..data_tmp")
        os.symlink(new, tmp)
        os.rename(tmp, os.path.join(self.path, "..data"))
        old = os.path.join(self.path, self.current)
        for f in os.listdir(old):
            os.remove(os.path.join(old, f))
        os.rmdir(old)
        self.current = new
        return t0

    def cert_path(self):
        return os.path.join(self.path, "tls.crt")

    def key_path(self):
        return os.path.join(self.path, "tls.key")


# --- observing baton --------------------------------------------------------------------------

def wait_record(log, proc, since, message, timeout):
    """The first record of baton's log from `since` on whose message has `message` in it."""
    deadline = time.monotonic() + timeout
    while True:
        r = log.find(message, since)
        if r:
            return r
        if proc.poll() is not None:
            raise RuntimeError(f"baton exited ({proc.returncode}) waiting for {message!r}; "
                               f"last log lines: {log.records[-5:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {message!r} in baton's log within {timeout}s; "
                               f"last log lines: {log.records[-5:]}")
        time.sleep(0.01)


def handshake(port, ctx):
    """Peer certificate (DER) of one fresh TLS handshake, or None if it failed."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                return s.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return None


def client_context():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def wait_served(port, ctx, der, timeout):
    """Handshake every POLL s until `der` is served; returns (time.time(), failed handshakes)."""
    deadline = time.monotonic() + timeout
    failures = 0
    while time.monotonic() < deadline:
        got = handshake(port, ctx)
        if got == der:
            return time.time(), failures
        if got is None:
            failures += 1
        time.sleep(POLL)
    raise TimeoutError(f"new certificate not served within {timeout}s")


class Upstream:
    """A loopback HTTP/1.1 upstream answering `200 ok` to everything, keep-alive."""

    REPLY = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok"

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        buf = b""
        with conn:
            while True:
                try:
                    chunk = conn.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
                while b"\r\n\r\n" in buf:
                    _, buf = buf.split(b"\r\n\r\n", 1)
                    try:
                        conn.sendall(self.REPLY)
                    except OSError:
                        return

    def close(self):
        self.stopped = True
        self.sock.close()


def start_wrk(procs, port):
    """TLS load until stopped: every request a new connection, so a new handshake."""
    return procs.popen(
        "wrk", ["wrk", "-t1", "-c8", "-d3600s", "-H", "Connection: close", f"https://127.0.0.1:{port}/"],
        stop=signal.SIGINT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def stop_wrk(wrk):
    """SIGINT makes wrk stop and print its summary: (requests, errors, summary text)."""
    wrk.send_signal(signal.SIGINT)
    try:
        out, _ = wrk.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        wrk.kill()
        out, _ = wrk.communicate()
    res = common.parse_wrk(out)
    return res["requests"], res["errors"], out


def settle(port, ctx, der):
    """SETTLE s of handshakes after a rotation, each of which must serve `der`:
    (failed handshakes, handshakes that served an older certificate)."""
    failures = regressions = 0
    settle_end = time.monotonic() + SETTLE
    while time.monotonic() < settle_end:
        got = handshake(port, ctx)
        if got is None:
            failures += 1
        elif got != der:
            regressions += 1
        time.sleep(0.02)
    return failures, regressions


def run_setting(baton, envoy, mode, debounce_ms, rotations, serial_base):
    """One baton in `mode`, `rotations` rotations with --debounce `debounce_ms`, under TLS load;
    per-rotation figures."""
    work = tempfile.mkdtemp(prefix="baton-bench-rotation-")
    log_path = os.path.join(work, "baton.log")
    procs = common.Processes()
    log = None
    upstream = Upstream()
    done_message, own_field = DONE[mode]
    result = {"mode": mode, "debounce_ms": debounce_ms, "served": [], "decided": [],
              "detect_ms": [], "own_ms": [], "failures": 0, "regressions": 0, "extra_changes": 0,
              "startup_ms": [], "deferred": 0, "refused": 0, "restarts": 0, "ahead": 0,
              "skipped": 0,
              "code": None, "wrk_requests": 0, "wrk_errors": 0, "wrk_out": ""}
    try:
        certs = gen_certs(os.path.join(work, "certs"), rotations + 1, serial_base)
        secret = Secret(os.path.join(work, "secret"))
        secret.init(certs[0])
        port, admin, status = free_port(), free_port(), free_port()
        debounce = f"{debounce_ms:g}ms"
        with open(log_path, "w") as out:
            proc = procs.popen(
                "baton",
                [baton, "--log-format", "json", "envoy", "--envoy-binary", envoy,
                 "--template", "standalone", "--var", f"listen_port={port}",
                 "--var", "listen_address=127.0.0.1", "--var", f"upstream=127.0.0.1:{upstream.port}",
                 "--admin-port", str(admin), "--status-addr", f"127.0.0.1:{status}",
                 "--config-dir", os.path.join(work, "cfg"), "--concurrency", "1",
                 "--drain-duration", "1s", "--parent-shutdown-duration", "2s", "--stats-flush-interval", "250ms",
                 "--termination-drain-duration", "1s", "--cert-rotation", mode,
                 "--cert", f"{secret.cert_path()}:{secret.key_path()}", "--debounce", debounce],
                stdout=out, stderr=out,
            )
        log = common.JsonLog(log_path)
        ctx = client_context()
        wait_record(log, proc, 0, "epoch ready and serving", 60)
        wait_record(log, proc, 0, "watching files", 10)
        wait_served(port, ctx, certs[0][2], 30)
        wrk = start_wrk(procs, port)
        time.sleep(0.5)

        for n in range(1, rotations + 1):
            if proc.poll() is not None:
                raise RuntimeError(f"baton exited ({proc.returncode}) before rotation {n}")
            der = certs[n][2]
            index = log.poll()
            t0 = secret.rotate(certs[n])
            t1, failures = wait_served(port, ctx, der, ROTATION_TIMEOUT)
            result["failures"] += failures
            done = wait_record(log, proc, index, done_message, ROTATION_TIMEOUT)
            failures, regressions = settle(port, ctx, der)
            result["failures"] += failures
            result["regressions"] += regressions
            log.poll()
            messages = [rec.get("message", "") for rec in log.records[index:]]
            changes = [rec for rec in log.records[index:]
                       if rec.get("message") == "watched content changed"]
            if not changes:
                raise RuntimeError(f"rotation {n}: no 'watched content changed' record")
            result["extra_changes"] += len(changes) - 1
            result["deferred"] += sum(1 for m in messages if m.startswith("restart waits"))
            result["refused"] += sum(1 for m in messages if m.startswith(REFUSED))
            result["restarts"] += sum(1 for m in messages if m == "hot restart requested")
            result["ahead"] += sum(1 for m in messages if m.startswith(AHEAD))
            result["skipped"] += sum(1 for m in messages if m.startswith(SKIPPED))
            decided = parse_timestamp(changes[0]["timestamp"])
            result["served"].append((t1 - t0) * 1000)
            result["decided"].append((decided - t0) * 1000)
            result["detect_ms"].append(changes[0]["detect_ms"])
            result["own_ms"].append(done[own_field])
            if "startup_ms" in done:
                result["startup_ms"].append(done["startup_ms"])
        result["wrk_requests"], result["wrk_errors"], result["wrk_out"] = stop_wrk(wrk)
        # SIGTERM; if baton does not exit within 60 s, it and the Envoys under it are killed.
        result["code"] = procs.stop_popen(proc, signal.SIGTERM)
    except Exception:
        print(f"--- last lines of baton's log:\n{common.tail(log_path)}", file=sys.stderr)
        raise
    finally:
        procs.stop_all()
        upstream.close()
        if log is not None:
            log.close()
        if os.environ.get("BATON_BENCH_KEEP"):
            print(f"kept {work}", file=sys.stderr)
        else:
            subprocess.run(["rm", "-rf", work], check=False)
    return result


def anchor(baton, envoy, rotations, serial_base):
    """Envoy's own hot restart onto each next certificate, under hot-restarter.py and the same
    TLS load; figures named as run_setting's."""
    work = tempfile.mkdtemp(prefix="baton-bench-rotation-anchor-")
    base = os.path.join(work, "base-id")
    procs = common.Processes()
    upstream = Upstream()
    result = {"served": [], "failures": 0, "regressions": 0, "restarts": 0, "code": None,
              "wrk_requests": 0, "wrk_errors": 0, "wrk_out": ""}
    try:
        certs = gen_certs(os.path.join(work, "certs"), rotations + 1, serial_base)
        port, admin = free_port(), free_port()
        cfg = os.path.join(work, "envoy.json")

        def render(i):
            d = os.path.join(work, f"pair{i}")
            os.makedirs(d)
            crt, key = os.path.join(d, "tls.crt"), os.path.join(d, "tls.key")
            with open(crt, "w") as f:
                f.write(certs[i][0])
            with open(key, "w") as f:
                f.write(certs[i][1])
            tmp = cfg + ".tmp"
            subprocess.run(
                [baton, "render", "--template", "standalone", "--var", f"listen_port={port}",
                 "--var", "listen_address=127.0.0.1", "--var", f"upstream=127.0.0.1:{upstream.port}",
                 "--admin-port", str(admin), "--concurrency", "1", "--cert", f"{crt}:{key}",
                 "--output", tmp],
                check=True)
            os.rename(tmp, cfg)

        render(0)
        script = os.path.join(work, "start-envoy.sh")
        with open(script, "w") as f:
            f.write(START_SCRIPT.format(envoy=envoy, cfg=cfg, flags=FLAGS, base=base))
        os.chmod(script, 0o700)
        with open(os.path.join(work, "restarter.log"), "w") as out:
            sup = procs.popen("hot-restarter.py", [sys.executable, RESTARTER, script],
                              stdout=out, stderr=out)
        ctx = client_context()
        wait_served(port, ctx, certs[0][2], 30)
        wrk = start_wrk(procs, port)
        time.sleep(0.5)
        for n in range(1, rotations + 1):
            if sup.poll() is not None:
                raise RuntimeError(f"hot-restarter.py exited ({sup.returncode}) before rotation "
                                   f"{n}:\n{common.tail(os.path.join(work, 'restarter.log'))}")
            render(n)
            t0 = time.time()
            sup.send_signal(signal.SIGHUP)
            t1, failures = wait_served(port, ctx, certs[n][2], ROTATION_TIMEOUT)
            result["failures"] += failures
            result["served"].append((t1 - t0) * 1000)
            result["restarts"] += 1
            common.wait_live(admin, n)
            failures, regressions = settle(port, ctx, certs[n][2])
            result["failures"] += failures
            result["regressions"] += regressions
        result["wrk_requests"], result["wrk_errors"], result["wrk_out"] = stop_wrk(wrk)
        result["code"] = procs.stop_popen(sup, signal.SIGTERM)
    finally:
        procs.stop_all()
        upstream.close()
        try:
            with open(base) as f:
                common.remove_envoy_shm([f.read()])
        except OSError:
            pass
        if os.environ.get("BATON_BENCH_KEEP"):
            print(f"kept {work}", file=sys.stderr)
        else:
            subprocess.run(["rm", "-rf", work], check=False)
    return result


def merge(a, b):
    """Two runs of one setting (or of the anchor) as one."""
    out = dict(a)
    for k, v in b.items():
        if isinstance(v, (list, str)) and k != "mode":
            out[k] = a[k] + v
        elif isinstance(v, int) and k != "code":
            out[k] = a[k] + v
    out["code"] = a["code"] or b["code"]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rotations", type=int, default=20, help="rotations per setting")
    ap.add_argument("--rounds", type=int, default=1,
                    help="split the rotations into rounds that alternate anchor and settings")
    ap.add_argument("--mode", action="append", choices=MODES,
                    help="--cert-rotation mode to measure (repeatable; default both)")
    ap.add_argument("--debounce", action="append", type=parse_duration_ms,
                    help="--debounce setting to measure (repeatable; default 100ms)")
    ap.add_argument("--json", help="write every figure here")
    ap.add_argument("--baton", default=common.BATON)
    ap.add_argument("--envoy", required=True)
    a = ap.parse_args()
    if a.rotations < 1 or a.rounds < 1 or a.rounds > a.rotations:
        ap.error("--rotations and --rounds: 1 <= R <= N")
    modes = a.mode or list(MODES)
    settings = [(m, d) for d in (a.debounce or [100.0]) for m in modes]
    load_before = common.load_average()

    # Rounds alternate the anchor and each setting, so a change in the machine's load
    # lands on all of them alike.
    per_round = a.rotations // a.rounds
    base = None
    results = [None] * len(settings)
    for n in range(a.rounds):
        print(f"[round {n + 1}] anchor (hot-restarter.py): {per_round} rotations, load "
              f"{common.load_average()}", file=sys.stderr, flush=True)
        got = anchor(a.baton, a.envoy, per_round, 100_000 * (n + 1))
        base = got if base is None else merge(base, got)
        for i, (mode, d) in enumerate(settings):
            print(f"[round {n + 1}] --cert-rotation {mode} --debounce {d:g}ms: {per_round} "
                  f"rotations, load {common.load_average()}", file=sys.stderr, flush=True)
            got = run_setting(a.baton, a.envoy, mode, d, per_round, 1000 * (10 * n + i + 1))
            results[i] = got if results[i] is None else merge(results[i], got)

    print(f"{per_round * a.rounds} rotations per setting in {a.rounds} round(s); ..data swap "
          f"of an EC P-256 cert/key; TLS handshake poll every {POLL * 1000:.0f} ms; "
          f"`wrk -t1 -c8 -H 'Connection: close'` throughout; Envoy --concurrency 1, drain 1 s; "
          f"{SETTLE}s after each rotation; load average before {load_before}, after "
          f"{common.load_average()}")
    print()
    a50 = pct(base["served"], 0.5)
    header = ["", "anchor: hot-restarter.py, SIGHUP"] + [
        f"baton `--cert-rotation {r['mode']} --debounce {r['debounce_ms']:g}ms`" for r in results]

    def trio(xs):
        return f"{pct(xs, 0.5):.1f} / {pct(xs, 0.99):.1f} / {max(xs):.1f} ms"

    def p50(xs):
        return f"{statistics.median(xs):.1f} ms" if xs else NA

    def restart_only(r, text):
        return text if r["mode"] == "restart" else NA

    rows = [
        ["swap (anchor: SIGHUP) -> new certificate served, p50 / p99 / max", trio(base["served"])]
        + [trio(r["served"]) for r in results],
        ["as D + x (p50)", f"{a50:.1f} ms"]
        + [f"D + {pct(r['served'], 0.5) - r['debounce_ms']:.1f} ms" for r in results],
        ["x / anchor's (p50)", "1.00"]
        + [f"{(pct(r['served'], 0.5) - r['debounce_ms']) / a50:.2f}" for r in results],
        ["swap -> decided, p50 / p99 / max", NA] + [trio(r["decided"]) for r in results],
        ["decided -> served, p50", NA]
        + [p50([s - d for s, d in zip(r["served"], r["decided"])]) for r in results],
        ["baton `detect_ms` (1st event -> decided) p50", NA] + [p50(r["detect_ms"]) for r in results],
        ["baton's own: `restart_ms` / `rotation_ms` (to Envoy's `/certs` confirming), p50", NA]
        + [p50(r["own_ms"]) for r in results],
        ["of which spawn -> ready (`startup_ms`) p50", NA] + [p50(r["startup_ms"]) for r in results],
        ["`envoy --mode validate` done ahead (in the quiet period) / skipped (bootstrap identical)",
         NA] + [restart_only(r, f"{r['ahead']} / {r['skipped']} of {r['restarts']}") for r in results],
        ["hot restarts", str(base["restarts"])] + [str(r["restarts"]) for r in results],
        ["failed handshakes: poller / wrk", f"{base['failures']} / {base['wrk_errors']}"]
        + [f"{r['failures']} / {r['wrk_errors']}" for r in results],
        ["wrk requests (each a TLS handshake)", f"{base['wrk_requests']:,}"]
        + [f"{r['wrk_requests']:,}" for r in results],
        ["old certificate after the new one served", str(base["regressions"])]
        + [str(r["regressions"]) for r in results],
        ["extra 'watched content changed' records / deferred / refused", NA]
        + [f"{r['extra_changes']} / {r['deferred']} / {r['refused']}" for r in results],
        ["exit code after SIGTERM (anchor: hot-restarter.py)", str(base["code"])]
        + [str(r["code"]) for r in results],
    ]
    print(common.table(header, rows))
    for name, r in [("anchor", base)] + [(f"{r['mode']}, D={r['debounce_ms']:g}ms", r) for r in results]:
        if r["wrk_errors"]:
            print(f"\nwrk, {name}:\n{r['wrk_out']}")
    common.save_json(a.json, {"anchor": base, "baton": results, "load": load_before})
    ok = all(r["code"] == 0 and r["failures"] == 0 and r["regressions"] == 0 and r["refused"] == 0
             and r["wrk_errors"] == 0 and (r["mode"] != "sds" or r["restarts"] == 0)
             for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
