#!/usr/bin/env python3
"""Counts the instructions billhook's server spends on payments, under callgrind.

Wall-clock and CPU-time figures on these shared machines drift by 10-30 % between runs;
instruction counts repeat within about 2 %, so they show what a change to the hot path
saves. (They are not time: valgrind runs one thread at a time, counts a `rep movsb`
copy per byte and has no SHA instructions, so copies and hashing weigh more here.)

    tools/callgrind-payments.py BINARY [PAYMENTS] [CONNECTIONS]

It starts `BINARY serve` under valgrind on a fresh SQLite database with one after
handler (a local receiver), makes 200 clients and 20 warm-up payments, zeroes the
counters, sends PAYMENTS payments (default 2000) from CONNECTIONS keep-alive
connections (default 32; 1 gives the unbatched path), waits until every one is
delivered, and prints the instructions counted in between, in total and per payment.
The profile is left in /tmp/callgrind-payments.out.1 for callgrind_annotate.
"""
import glob, http.client, os, subprocess, sys, tempfile, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from local_server import start, post

binary = sys.argv[1]
payments = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
connections = int(sys.argv[3]) if len(sys.argv) > 3 else 32
received = [0]


class Receiver(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        received[0] += 1
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
threading.Thread(target=receiver.serve_forever, daemon=True).start()
work = tempfile.mkdtemp()
out = "/tmp/callgrind-payments.out"
for old in glob.glob(out + "*"):
    os.remove(old)
server, host = start(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", binary],
                     f"sqlite:{work}/bench.db", work)


def wait_received(n):
    while received[0] < n:
        time.sleep(0.05)


conn = http.client.HTTPConnection(host, timeout=300)
port = receiver.server_address[1]
post(conn, "/handlers", {"name": "receiver", "event": "accounting.payments.create",
                         "task": f"http://127.0.0.1:{port}/hook"})
clients = [post(conn, "/clients", {"name": f"client {n}"})["id"] for n in range(200)]
for n in range(20):
    post(conn, "/payments", {"clients_id": clients[n], "amount": "1"})
wait_received(20)
time.sleep(1)
subprocess.run(["callgrind_control", "--zero", str(server.pid)],
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
received[0] = 0


def send(first):
    own = http.client.HTTPConnection(host, timeout=300)
    for n in range(first, payments, connections):
        post(own, "/payments", {"clients_id": clients[n % len(clients)], "amount": "1"})


threads = [threading.Thread(target=send, args=(k,)) for k in range(connections)]
for t in threads:
    t.start()
for t in threads:
    t.join()
wait_received(payments)
time.sleep(1.5)
subprocess.run(["callgrind_control", "--dump", str(server.pid)],
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
time.sleep(1)
server.terminate()
server.wait()
total = None
for line in open(out + ".1"):
    if line.startswith(("summary:", "totals:")):
        total = int(line.split()[1])
print(f"{total:,} instructions, {total // payments:,} per payment ({out}.1)")
