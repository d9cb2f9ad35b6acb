#!/usr/bin/env python3
"""What 10,000 push clients reconnecting at once cost a gateway in TLS handshakes.

Opens N fresh connections (a new TCP connection and, with TLS, a full handshake each;
no session resumption) from T threads to one node's client listener, sends
GET /v1/health on each, and reports the wall time and the node process's CPU time
(from /proc/<pid>/stat) over the run, so TLS can be priced against plain HTTP.

usage: handshake-cost.py ADDR NODE_PID [--ca CA.pem] [-n 10000] [-t 64]
   without --ca: plain HTTP (a node run with `up --plaintext-for-debugging`).
Sends only to ADDR (loopback), N requests in all, and stops by itself.
"""
import argparse
import os
import socket
import ssl
import threading
import time


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one(host, port, context):
    with socket.create_connection((host, port), timeout=10) as raw:
        conn = context.wrap_socket(raw, server_hostname=host) if context else raw
        try:
            conn.sendall(f"GET /v1/health HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n".encode())
            data = b""
            while chunk := conn.recv(4096):
                data += chunk
            return data.startswith(b"HTTP/1.1 200")
        finally:
            if context:
                conn.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("addr")
    p.add_argument("pid", type=int)
    p.add_argument("--ca")
    p.add_argument("-n", type=int, default=10_000)
    p.add_argument("-t", type=int, default=64)
    a = p.parse_args()
    host, port = a.addr.rsplit(":", 1)
    context = None
    if a.ca:
        context = ssl.create_default_context(cafile=a.ca)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
    left = [a.n]
    ok = [0]
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                if left[0] == 0:
                    return
                left[0] -= 1
            try:
                good = one(host, int(port), context)
            except OSError:
                good = False
            with lock:
                ok[0] += good

    cpu0, t0 = cpu_seconds(a.pid), time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(a.t)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall, cpu = time.monotonic() - t0, cpu_seconds(a.pid) - cpu0
    kind = "TLS 1.3" if context else "plain HTTP"
    print(f"{kind}: {ok[0]}/{a.n} connections ok in {wall:.1f} s ({a.n / wall:.0f}/s); "
          f"node CPU {cpu:.2f} s = {cpu / a.n * 1e6:.0f} us per connection")


if __name__ == "__main__":
    main()
