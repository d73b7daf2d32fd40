"""Helpers the benchmark scripts share."""

import socket


def free_port():
    """A loopback port that was free a moment ago (bound to port 0, then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
