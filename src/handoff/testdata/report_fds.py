# Test fixture: report what this epoch received, then serve one connection on fd 3.
# Output: KEY=VALUE lines on stdout, then "served" once a client got "epoch <n>".
import os, socket, stat, sys, fcntl

out = []
out.append("pid=%d" % os.getpid())
out.append("pgid=%d" % os.getpgid(0))
for key in sorted(os.environ):
    if key.startswith(("LISTEN_", "BATON_")) or key in ("NGINX", "NOTIFY_SOCKET"):
        out.append("env.%s=%s" % (key, os.environ[key]))
fds = []
for name in os.listdir("/proc/self/fd"):
    fd = int(name)
    if fd < 3:
        continue
    try:
        st = os.fstat(fd)  # the directory fd of listdir is closed by now
    except OSError:
        continue
    kind = "sock" if stat.S_ISSOCK(st.st_mode) else "other"
    cloexec = fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    fds.append("%d:%s:%s" % (fd, kind, "cloexec" if cloexec else "inherit"))
out.append("fds=" + ",".join(sorted(fds, key=lambda s: int(s.split(":")[0]))))
with open("/proc/self/status") as f:
    for line in f:
        if line.startswith(("SigBlk:", "SigIgn:")):
            k, v = line.split(":", 1)
            out.append("%s=%s" % (k, v.strip()))
print("\n".join(out), flush=True)

if len(sys.argv) > 1 and sys.argv[1] == "serve":
    listener = socket.socket(fileno=3)
    conn, _ = listener.accept()
    conn.sendall(("epoch %s" % os.environ.get("BATON_EPOCH", "?")).encode())
    conn.close()
    print("served", flush=True)
