"""What the benchmark figures share: processes started and stopped by PID, waiting with a
deadline, the load generators (wrk, or baton's loadgen example with a timeline), baton's JSON
log, Envoy's admin API, and markdown tables."""

import ctypes
import glob
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCH_DIR = os.path.join(ROOT, "scripts", "benchmarks")
BATON = os.path.join(ROOT, "target", "release", "baton")
LOADGEN = os.path.join(ROOT, "target", "release", "examples", "loadgen")
STEP_TIMEOUT = 30.0  # one restart may take this long before the run is abandoned


def free_port():
    """A loopback port that was free a moment ago (bound to port 0, then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def tool(name):
    path = shutil.which(name) or os.path.join("/usr/sbin", name)
    if not os.access(path, os.X_OK):
        sys.exit(f"{name} not found (scripts/install-test-deps installs it)")
    return path


def wait_until(what, cond, timeout=STEP_TIMEOUT, poll=0.002):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f}s")
        time.sleep(poll)


def answers(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as r:
            return r.status == 200
    except Exception:
        return False


def load_average():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


# ---------------------------------------------------------------- processes


def become_subreaper():
    """Orphans (daemonized HAProxy, workers of a killed master) become our children."""
    PR_SET_CHILD_SUBREAPER = 36
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print("warning: could not become a child subreaper", file=sys.stderr)


def proc_stat(pid):
    """(comm, state, ppid) of a live process, None if it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    comm = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return comm, fields[0], int(fields[1])


def reap(pid):
    """Collect pid's exit status if it is our (adopted) child; ignore otherwise."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def alive(pid):
    reap(pid)
    return proc_stat(pid) is not None


def children(pid):
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = proc_stat(int(entry))
            if st and st[2] == pid:
                out.append(int(entry))
    return out


def descendants(pid):
    out, todo = [], [pid]
    while todo:
        kids = children(todo.pop())
        out.extend(kids)
        todo.extend(kids)
    return out


def status_kb(pid, field):
    """A `kB` field of /proc/PID/status (VmRSS, VmHWM), None if gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_ticks(pid):
    """utime + stime of a process, in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def context_switches(pid):
    """Voluntary + involuntary context switches per thread of `pid` ({tid: count}): each is
    a wakeup. Compare two samples with `wakeups_between`."""
    counts = {}
    for task in glob.glob(f"/proc/{pid}/task/*/status"):
        tid = int(task.split("/")[4])
        try:
            with open(task) as f:
                counts[tid] = sum(int(line.split()[1]) for line in f if line.startswith(
                    ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")))
        except OSError:
            pass
    return counts


def wakeups_between(before, after):
    """Context switches between two samples, over the threads alive at the second (a thread
    that ended meanwhile takes its count with it)."""
    return sum(n - before.get(tid, 0) for tid, n in after.items())


class Processes:
    """Everything a figure starts, stopped by PID in `stop_all` (also on failure)."""

    def __init__(self):
        self.popens = []  # (label, Popen, stop signal)
        self.pids = {}  # pid -> expected comm, for processes that are not Popen objects

    def popen(self, label, args, stop=signal.SIGTERM, **kw):
        p = subprocess.Popen(args, **kw)
        self.popens.append((label, p, stop))
        return p

    def adopt(self, pid, comm):
        self.pids[pid] = comm

    def stop_popen(self, p, sig, timeout=60.0):
        """Stop one started process (and, if it must be killed, what it left behind)."""
        if p.poll() is not None:
            return p.returncode
        kids = descendants(p.pid)
        p.send_signal(sig)
        try:
            return p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kids = set(kids) | set(descendants(p.pid))
            p.kill()
            p.wait()
            for k in kids:
                if alive(k):
                    os.kill(k, signal.SIGKILL)
            return p.returncode

    def stop_pids(self, timeout=10.0):
        live = [p for p, comm in self.pids.items() if alive(p) and proc_stat(p)[0] == comm]
        for p in live:
            os.kill(p, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(alive(p) for p in live):
            time.sleep(0.05)
        for p in live:
            if alive(p) and proc_stat(p)[0] == self.pids[p]:
                os.kill(p, signal.SIGKILL)
        for p in live:
            deadline = time.monotonic() + 5
            while alive(p) and time.monotonic() < deadline:
                time.sleep(0.01)
        self.pids.clear()

    def stop_all(self):
        self.stop_pids()
        for _, p, sig in reversed(self.popens):
            self.stop_popen(p, sig)
        self.popens.clear()


def tail(path, n=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


class JsonLog:
    """baton's JSON records (stderr, shared with the proxy's own lines), read as they come."""

    def __init__(self, path):
        self.f = open(path)
        self.rest = ""
        self.records = []

    def poll(self):
        self.rest += self.f.read()
        *lines, self.rest = self.rest.split("\n")
        for line in lines:
            if line.startswith("{"):
                try:
                    self.records.append(json.loads(line))
                except ValueError:
                    pass
        return len(self.records)

    def find(self, message, since=0, **fields):
        self.poll()
        for r in self.records[since:]:
            if message in r.get("message", "") and all(r.get(k) == v for k, v in fields.items()):
                return r
        return None

    def all(self, message):
        self.poll()
        return [r for r in self.records if message in r.get("message", "")]

    def close(self):
        self.f.close()


# ---------------------------------------------------------------- Envoy


def gauges(admin):
    """`server.hot_restart_epoch` and `server.state` of whoever holds the admin port: 40
    bytes, where `/server_info` is 125 KB of JSON that costs a starting Envoy's main thread
    3 ms a request; polled every 2 ms, it would slow the start it measures."""
    url = f"http://127.0.0.1:{admin}/stats?filter=^server\\.(state|hot_restart_epoch)$"
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            text = r.read().decode()
    except Exception:
        return None
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        out[name.strip()] = int(value)
    return out


def wait_live(admin, restart_epoch, timeout=STEP_TIMEOUT):
    """Poll Envoy's admin API every 2 ms until `restart_epoch` answers it, LIVE
    (`server.state` 0); returns time.monotonic() then. One hot-restart chain only."""

    def live():
        g = gauges(admin)
        if g and g.get("server.hot_restart_epoch") == restart_epoch and g.get("server.state") == 0:
            return time.monotonic()
        return None

    return wait_until(f"restart epoch {restart_epoch} LIVE", live, timeout)


def render(baton, template, port, admin, path, extra_vars=()):
    """The bootstrap `baton envoy` would give an epoch (metrics sink on port 0: nothing receives), for plain Envoy."""
    args = [baton, "render", "--template", template, "--var", f"listen_port={port}",
            "--var", "listen_address=127.0.0.1", "--admin-port", str(admin), "--output", path]
    for v in extra_vars:
        args += ["--var", v]
    subprocess.run(args, check=True)
    return path


def remove_envoy_shm(base_ids):
    """Envoy leaves /dev/shm/envoy_shared_memory_<base id * 10> behind."""
    for base in base_ids:
        try:
            os.remove(f"/dev/shm/envoy_shared_memory_{int(base) * 10}")
        except (OSError, ValueError):
            pass


# ---------------------------------------------------------------- load


class Load:
    """A keep-alive HTTP load against 127.0.0.1:port until `stop()`: wrk, or baton's loadgen
    example (the same counting as wrk, plus a timeline of answers and errors). wrk stops by
    itself after `seconds`: a run that may last longer must say so."""

    def __init__(self, procs, kind, port, threads, connections, timeline=None,
                 connection_close=False, seconds=3600):
        self.kind = kind
        self.started = time.time()
        close = ["-H", "Connection: close"] if connection_close else []
        if kind == "wrk":
            args = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", *close,
                    f"http://127.0.0.1:{port}/"]
        else:
            args = [LOADGEN, "--connections", str(connections), "--port", str(port)]
            if connection_close:
                args.append("--connection-close")
            if timeline:
                args += ["--timeline", timeline]
        self.timeline = timeline
        self.proc = procs.popen(kind, args, stop=signal.SIGINT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    def check(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.kind} exited early:\n{self.proc.communicate()[0]}")

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=60)
        return parse_wrk(out)


def parse_wrk(out):
    """wrk's summary (loadgen prints the same lines)."""
    m = re.search(r"(\d+) requests in ([\d.]+)(m?s|m|h)\b", out)
    if not m:
        raise RuntimeError(f"cannot read the load generator's output:\n{out}")
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(3)]
    res = {"requests": int(m.group(1)), "load_s": float(m.group(2)) * scale,
           "connect": 0, "read": 0, "write": 0, "timeout": 0, "non2xx": 0}
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        for k, v in zip(("connect", "read", "write", "timeout"), m.groups()):
            res[k] = int(v)
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        res["non2xx"] = int(m.group(1))
    res["errors"] = sum(res[k] for k in ("connect", "read", "write", "timeout", "non2xx"))
    return res


# ---------------------------------------------------------------- figures


def pct(xs, q):
    """Linear interpolation between closest ranks (numpy's default)."""
    xs = sorted(xs)
    if not xs:
        return float("nan")
    pos = q * (len(xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def ms(x):
    return "-" if x != x else f"{x * 1000:.0f} ms"


def table(header, rows):
    """A markdown table; numbers right-aligned (columns after the first)."""
    lines = ["| " + " | ".join(header) + " |",
             "| --- | " + " | ".join("---:" for _ in header[1:]) + " |"]
    for row in rows:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


def save_json(path, data):
    if path:
        with open(path, "w") as f:
            json.dump(data, f, indent=1)


def add_marks(timeline, marks, label=None):
    """Record restart times (time.time()) in a loadgen timeline, for the plot."""
    with open(timeline) as f:
        data = json.load(f)
    data["marks"] = marks
    if label:
        data["label"] = label
    with open(timeline, "w") as f:
        json.dump(data, f)
