#!/usr/bin/env python3
"""One busy after handler with a backlog far over its share, beside a fast one.

    tools/busy-handler.py BINARY [CLIENTS] [DATABASE_URL]

Starts `BINARY serve` on a fresh SQLite database (or DATABASE_URL), a local receiver
with two routes — /slow answers after 200 ms (with 64 calls at once, about 320 a
second), /fast at once — and one after handler of `clients.create` on each. Makes
CLIENTS clients (default 3000) from 16 connections, then prints how long after the
last one the fast handler had every event, how many calls the slow one got in 10 s,
and the server's CPU time. A handler that is only slow must neither hold the other
up nor cost the server much more than its calls.
"""
import http.client, sys, tempfile, threading, time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from local_server import start, post

binary = sys.argv[1]
clients = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
got = {"/slow": 0, "/fast": 0}
lock = threading.Lock()


class Receiver(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.path == "/slow":
            time.sleep(0.2)
        with lock:
            got[self.path] += 1
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer.request_queue_size = 1024
receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
threading.Thread(target=receiver.serve_forever, daemon=True).start()
port = receiver.server_address[1]
work = tempfile.mkdtemp()
url = sys.argv[3] if len(sys.argv) > 3 else f"sqlite:{work}/busy.db"
server, host = start([binary], url, work)


def cpu_seconds():
    fields = open(f"/proc/{server.pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100


for name in ("slow", "fast"):
    post(http.client.HTTPConnection(host), "/handlers", {"name": name, "event": "clients.create",
                       "task": f"http://127.0.0.1:{port}/{name}", "retry_schedule": [1]})
started, cpu_before = time.time(), cpu_seconds()
connections = threading.local()


def make(n):
    if not hasattr(connections, "c"):
        connections.c = http.client.HTTPConnection(host)
    post(connections.c, "/clients", {"name": f"client {n}"})


with ThreadPoolExecutor(16) as pool:
    list(pool.map(make, range(clients)))
made = time.time()
fast_done = None
while time.time() - made < 10:
    with lock:
        fast = got["/fast"]
    if fast >= clients and fast_done is None:
        fast_done = time.time() - made
    time.sleep(0.05)
with lock:
    slow = got["/slow"]
elapsed = time.time() - made
fast_text = "not within 10 s" if fast_done is None else f"{fast_done:.2f} s after the last client"
print(f"{clients} clients made in {made - started:.1f} s; the fast handler had every event "
      f"{fast_text}; the slow one got {slow} calls in {elapsed:.0f} s ({slow / elapsed:.0f}/s); "
      f"server CPU {cpu_seconds() - cpu_before:.1f} s")
server.terminate()
server.wait()
