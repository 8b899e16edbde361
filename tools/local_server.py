"""What the tools share: a billhook server of their own on loopback, and its API.

    from local_server import KEY, start, post
"""
import http.client
import json
import os
import subprocess
import sys

KEY = "k" * 32


def start(command, database_url, cwd):
    """Starts `command` (the binary, or a wrapper and the binary) serving on a free port
    with `database_url` and the admin key KEY; returns the process and its host:port."""
    server = subprocess.Popen(
        command + ["serve", "--listen", "127.0.0.1:0", "--database-url", database_url,
                   "--log", "warn"],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env=dict(os.environ, BILLHOOK_API_KEY=KEY))
    while True:
        line = server.stdout.readline()
        if not line:
            sys.exit("the server exited before listening")
        if line.startswith("billhook listening on "):
            return server, line.split("http://")[1].strip()


def post(conn, path, body):
    """POSTs `body` to the API's `path` on `conn`; fails unless 200 or 201."""
    conn.request("POST", "/api/v1" + path, json.dumps(body),
                 {"X-Api-Key": KEY, "content-type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    assert response.status in (200, 201), (response.status, data)
    return json.loads(data)
