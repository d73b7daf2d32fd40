#!/usr/bin/env python3
"""Certificate rotation benchmark: Kubernetes-style `..data` swap -> new certificate served.

baton runs the real Envoy (embedded `standalone` template, TLS listener on 127.0.0.1) with
`--cert <secret>/tls.crt:<secret>/tls.key`. The secret directory is laid out as the kubelet does
it: `..<ts>/tls.{crt,key}`, `..data -> ..<ts>`, `tls.crt -> ..data/tls.crt`, and so on. Each
rotation writes a new `..<ts2>` with the next EC P-256 certificate, swaps `..data` atomically
(symlink `..data_tmp`, rename over `..data`), and removes the old directory.

Measured per rotation, for each `--debounce` setting D:
  * swap -> new certificate served: TLS handshakes to the listener every ~2 ms until the peer
    certificate (DER) is the new one (external, end to end);
  * swap -> restart decided: the timestamp of baton's "watched content changed" record
    (its `detect_ms` field is first file event -> decision);
  * baton's own `restart_ms` (trigger -> new epoch serving) from "epoch ready and serving".
D, the quiet period, is printed beside the figures: they read as "D + x ms".

The anchor, in the same run: Envoy's own hot restart onto the next certificate under Envoy's
hot-restarter.py (../shared/anchors, benchmarks only) with the same bootstrap (`baton render`
with `--cert`, rewritten before each SIGHUP, not timed): SIGHUP -> the new certificate served,
polled the same way. "Served at debounce + Envoy's start" means baton's x is this anchor.

Between rotations the script waits for "epoch ready and serving" of the new epoch and then
1.5 s more: baton defers a restart until the previous epoch has drained for --drain-duration
(1 s here) and been merged by one stats flush (250 ms); rotating earlier would only measure
that wait.

Everything listens on 127.0.0.1 ports chosen free; every process started is stopped.
Usage: scripts/bench rotation [--rotations N] [--rounds R] [--debounce 20ms --debounce 100ms]
                              [--json FILE]
"""

import argparse
import concurrent.futures
import datetime
import json
import os
import re
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

import common
from common import free_port

ROOT = common.ROOT
RESTARTER = os.path.normpath(os.path.join(ROOT, "..", "shared", "anchors", "hot-restarter.py"))
START_SCRIPT = """#!/bin/sh
if [ "$RESTART_EPOCH" = 0 ]; then
    exec {envoy} -c {cfg} --restart-epoch 0 {flags} --use-dynamic-base-id --base-id-path {base}
fi
exec {envoy} -c {cfg} --restart-epoch "$RESTART_EPOCH" {flags} --base-id "$(cat {base})"
"""
FLAGS = ("--drain-time-s 1 --parent-shutdown-time-s 2 --service-cluster baton "
         "--local-address-ip-version v4 -l warning --concurrency 1")
POLL = 0.002          # seconds between handshake attempts
SETTLE = 1.5         # seconds after the new epoch serves (> --drain-duration 1s + one 250 ms flush)
ROTATION_TIMEOUT = 30.0


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

class Log:
    """baton's stderr, JSON lines interleaved with Envoy's own output; read incrementally."""

    def __init__(self, path, proc):
        self.path = path
        self.proc = proc
        self.f = open(path)
        self.buf = ""
        self.records = []

    def poll(self):
        chunk = self.f.read()
        if chunk:
            self.buf += chunk
            *lines, self.buf = self.buf.split("\n")
            for line in lines:
                if line.startswith("{"):
                    try:
                        self.records.append(json.loads(line))
                    except json.JSONDecodeError:
                        pass
        return len(self.records)

    def after(self, index, message):
        return [r for r in self.records[index:] if r.get("message", "") == message]

    def wait_for(self, index, message, timeout, pred=lambda r: True):
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            for r in self.after(index, message):
                if pred(r):
                    return r
            if self.proc.poll() is not None:
                raise RuntimeError(f"baton exited ({self.proc.returncode}) waiting for {message!r}; "
                                   f"last log lines: {self.records[-5:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {message!r} in baton's log within {timeout}s; "
                                   f"last log lines: {self.records[-5:]}")
            time.sleep(0.01)

    def close(self):
        self.f.close()


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


def envoy_pids_of(config_dir, pids):
    """Those of `pids` still alive and running an Envoy config from `config_dir`."""
    alive = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if config_dir.encode() in f.read():
                    alive.append(pid)
        except OSError:
            pass
    return alive


def run_setting(baton, envoy, debounce_ms, rotations, serial_base):
    """One baton, `rotations` rotations with --debounce `debounce_ms`; per-rotation figures."""
    work = tempfile.mkdtemp(prefix="baton-bench-rotation-")
    cfg_dir = os.path.join(work, "cfg")
    log_path = os.path.join(work, "baton.log")
    proc = None
    log = None
    seen_pids = set()
    result = {"debounce_ms": debounce_ms, "served": [], "decided": [], "detect_ms": [],
              "restart_ms": [], "startup_ms": [], "failures": 0, "regressions": 0, "extra_changes": 0,
              "deferred": 0, "refused": 0, "ahead": 0, "code": None}
    try:
        certs = gen_certs(os.path.join(work, "certs"), rotations + 1, serial_base)
        secret = Secret(os.path.join(work, "secret"))
        secret.init(certs[0])
        port, admin, status, upstream = free_port(), free_port(), free_port(), free_port()
        debounce = f"{debounce_ms:g}ms"
        with open(log_path, "w") as out:
            proc = subprocess.Popen(
                [baton, "--log-format", "json", "envoy", "--envoy-binary", envoy,
                 "--template", "standalone", "--var", f"listen_port={port}",
                 "--var", "listen_address=127.0.0.1", "--var", f"upstream=127.0.0.1:{upstream}",
                 "--admin-port", str(admin), "--status-addr", f"127.0.0.1:{status}",
                 "--config-dir", cfg_dir, "--concurrency", "1",
                 "--drain-duration", "1s", "--parent-shutdown-duration", "2s", "--stats-flush-interval", "250ms",
                 "--termination-drain-duration", "1s",
                 "--cert", f"{secret.cert_path()}:{secret.key_path()}", "--debounce", debounce],
                stdout=out, stderr=out,
            )
        log = Log(log_path, proc)
        ctx = client_context()
        r = log.wait_for(0, "epoch ready and serving", 60)
        seen_pids.add(r.get("pid"))
        log.wait_for(0, "watching files", 10)
        wait_served(port, ctx, certs[0][2], 30)
        time.sleep(0.2)

        for n in range(1, rotations + 1):
            if proc.poll() is not None:
                raise RuntimeError(f"baton exited ({proc.returncode}) before rotation {n}")
            der = certs[n][2]
            index = log.poll()
            t0 = secret.rotate(certs[n])
            t1, failures = wait_served(port, ctx, der, ROTATION_TIMEOUT)
            result["failures"] += failures
            ready = log.wait_for(index, "epoch ready and serving", ROTATION_TIMEOUT)
            seen_pids.add(ready.get("pid"))
            # Settle: every handshake here must serve the new certificate.
            settle_end = time.monotonic() + SETTLE
            while time.monotonic() < settle_end:
                got = handshake(port, ctx)
                if got is None:
                    result["failures"] += 1
                elif got != der:
                    result["regressions"] += 1
                time.sleep(0.02)
            log.poll()
            changes = log.after(index, "watched content changed")
            if not changes:
                raise RuntimeError(f"rotation {n}: no 'watched content changed' record")
            result["extra_changes"] += len(changes) - 1
            result["deferred"] += sum(
                1 for rec in log.records[index:] if "restart waits" in rec.get("message", ""))
            result["refused"] += sum(
                1 for rec in log.records[index:] if "new epoch refused" in rec.get("message", ""))
            result["ahead"] += sum(
                1 for rec in log.records[index:] if "validated ahead" in rec.get("message", ""))
            decided = parse_timestamp(changes[0]["timestamp"])
            result["served"].append((t1 - t0) * 1000)
            result["decided"].append((decided - t0) * 1000)
            result["detect_ms"].append(changes[0]["detect_ms"])
            result["restart_ms"].append(ready["restart_ms"])
            result["startup_ms"].append(ready["startup_ms"])
    finally:
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    result["code"] = proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    result["code"] = "killed"
            else:
                result["code"] = proc.returncode
            if log is not None:
                log.poll()
                seen_pids.update(rec.get("pid") for rec in log.records
                                 if rec.get("message") == "epoch ready and serving")
            # Envoys left behind only if baton could not stop them; only ours, by PID.
            for pid in envoy_pids_of(cfg_dir, [p for p in seen_pids if p]):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        if log is not None:
            log.close()
        if os.environ.get("BATON_BENCH_KEEP"):
            print(f"kept {work}", file=sys.stderr)
        else:
            subprocess.run(["rm", "-rf", work], check=False)
    return result


def anchor(baton, envoy, rotations, serial_base):
    """Envoy's own hot restart onto each next certificate, under hot-restarter.py."""
    work = tempfile.mkdtemp(prefix="baton-bench-rotation-anchor-")
    proc = None
    base = os.path.join(work, "base-id")
    served = []
    failures = 0
    try:
        certs = gen_certs(os.path.join(work, "certs"), rotations + 1, serial_base)
        port, admin, upstream = free_port(), free_port(), free_port()
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
                 "--var", "listen_address=127.0.0.1", "--var", f"upstream=127.0.0.1:{upstream}",
                 "--admin-port", str(admin), "--cert", f"{crt}:{key}", "--output", tmp],
                check=True)
            os.rename(tmp, cfg)

        render(0)
        script = os.path.join(work, "start-envoy.sh")
        with open(script, "w") as f:
            f.write(START_SCRIPT.format(envoy=envoy, cfg=cfg, flags=FLAGS, base=base))
        os.chmod(script, 0o700)
        proc = subprocess.Popen([sys.executable, RESTARTER, script],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ctx = client_context()
        wait_served(port, ctx, certs[0][2], 30)
        time.sleep(0.2)
        for n in range(1, rotations + 1):
            render(n)
            t0 = time.time()
            proc.send_signal(signal.SIGHUP)
            t1, failed = wait_served(port, ctx, certs[n][2], ROTATION_TIMEOUT)
            failures += failed
            served.append((t1 - t0) * 1000)
            common.wait_live(admin, n)
            time.sleep(SETTLE)
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        try:
            common.remove_envoy_shm([open(base).read()])
        except OSError:
            pass
        subprocess.run(["rm", "-rf", work], check=False)
    return {"served": served, "failures": failures}


def pct(xs, q):
    """Linear interpolation between closest ranks (numpy's default)."""
    xs = sorted(xs)
    pos = q * (len(xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def merge(a, b):
    """Two runs of one setting as one."""
    out = dict(a)
    for k, v in b.items():
        if isinstance(v, list):
            out[k] = a[k] + v
        elif isinstance(v, int) and k != "code" and k != "debounce_ms":
            out[k] = a[k] + v
    out["code"] = a["code"] or b["code"]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rotations", type=int, default=50, help="rotations per --debounce setting")
    ap.add_argument("--debounce", action="append", type=parse_duration_ms,
                    help="--debounce setting to measure (repeatable; default 20ms and 100ms)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="split the rotations into rounds that alternate anchor and settings")
    ap.add_argument("--json", help="write every figure here")
    ap.add_argument("--baton", default=common.BATON)
    ap.add_argument("--envoy", required=True)
    a = ap.parse_args()
    settings = a.debounce or [20.0, 100.0]
    load_before = common.load_average()

    # Rounds alternate the anchor and each setting, so a change in the machine's load
    # lands on all of them alike.
    per_round = max(1, a.rotations // a.rounds)
    base = {"served": [], "failures": 0}
    results = [None] * len(settings)
    for n in range(a.rounds):
        print(f"[round {n + 1}] anchor (hot-restarter.py): {per_round} rotations, load "
              f"{common.load_average()}", file=sys.stderr, flush=True)
        got = anchor(a.baton, a.envoy, per_round, 100_000 * (n + 1))
        base["served"] += got["served"]
        base["failures"] += got["failures"]
        for i, d in enumerate(settings):
            print(f"[round {n + 1}] --debounce {d:g}ms: {per_round} rotations, load "
                  f"{common.load_average()}", file=sys.stderr, flush=True)
            got = run_setting(a.baton, a.envoy, d, per_round, 1000 * (10 * n + i + 1))
            results[i] = got if results[i] is None else merge(results[i], got)

    print(f"{per_round * a.rounds} rotations per setting in {a.rounds} round(s); ..data swap "
          f"of an EC P-256 cert/key; TLS "
          f"handshake poll every {POLL * 1000:.0f} ms; Envoy --concurrency 1, drain 1 s; "
          f"{SETTLE}s after each new epoch serves; load average before {load_before}, after "
          f"{common.load_average()}")
    print()
    a50 = pct(base["served"], 0.5)
    header = ["", "anchor: hot-restarter.py, SIGHUP"] + [
        f"baton `--debounce {r['debounce_ms']:g}ms`" for r in results]

    def trio(xs):
        return f"{pct(xs, 0.5):.1f} / {pct(xs, 0.99):.1f} / {max(xs):.1f} ms"

    rows = [
        ["swap (anchor: SIGHUP) -> new certificate served, p50 / p99 / max", trio(base["served"])]
        + [trio(r["served"]) for r in results],
        ["as D + x (p50)", f"{a50:.1f} ms"]
        + [f"D + {pct(r['served'], 0.5) - r['debounce_ms']:.1f} ms" for r in results],
        ["x / anchor's (p50)", "1.00"]
        + [f"{(pct(r['served'], 0.5) - r['debounce_ms']) / a50:.2f}" for r in results],
        ["swap -> restart decided, p50", "-"] + [f"{pct(r['decided'], 0.5):.1f} ms" for r in results],
        ["baton trigger -> serving (`restart_ms`) p50", "-"]
        + [f"{statistics.median(r['restart_ms']):g} ms" for r in results],
        ["of which spawn -> ready (`startup_ms`) p50", "-"]
        + [f"{statistics.median(r['startup_ms']):g} ms" for r in results],
        ["validations done ahead (during the quiet period)", "-"]
        + [f"{r['ahead']} of {len(r['served'])}" for r in results],
        ["failed handshakes / old certificate after the new one", f"{base['failures']} / -"]
        + [f"{r['failures']} / {r['regressions']}" for r in results],
        ["extra restarts for one swap / deferred / refused", "-"]
        + [f"{r['extra_changes']} / {r['deferred']} / {r['refused']}" for r in results],
    ]
    print(common.table(header, rows))
    common.save_json(a.json, {"anchor": base, "baton": results, "load": load_before})
    ok = all(r["code"] == 0 and r["failures"] == 0 and r["regressions"] == 0 and r["refused"] == 0
             for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
