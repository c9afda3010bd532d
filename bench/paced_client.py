#!/usr/bin/env python3
"""A paced HTTP client: USERS users, each on its own keep-alive connection, send RATE requests
per second to PATH for DURATION seconds, on a fixed schedule (a late request does not delay
the next one's start time). Prints one line: requests, statuses, p50 and p99 in ms.

Latency is measured from the scheduled start, so a stalled server counts in full
(no coordinated omission)."""
import http.client
import os
import sys
import threading
import time

ADDR = os.environ.get("ADDR", "127.0.0.1:8080")
PATH = os.environ.get("CRITICAL_PATH", "/api/auth/session")
USERS = int(os.environ.get("USERS", "8"))
RATE = float(os.environ.get("RATE", "25"))
DURATION = float(os.environ.get("DURATION", "10"))

latencies = []
statuses = {}
lock = threading.Lock()


def user(n: int, start: float) -> None:
    host, port = ADDR.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    interval = 1.0 / RATE
    # Spread the users over one interval.
    due = start + interval * n / USERS
    while due < start + DURATION:
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        try:
            conn.request("GET", PATH, headers={"x-user-id": f"critical-{n}"})
            resp = conn.getresponse()
            resp.read()
            status = resp.status
        except Exception:
            conn.close()
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            status = 0
        took = time.monotonic() - due
        with lock:
            latencies.append(took)
            statuses[status] = statuses.get(status, 0) + 1
        due += interval


start = time.monotonic() + 0.05
threads = [threading.Thread(target=user, args=(n, start)) for n in range(USERS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
latencies.sort()


def pct(p: float) -> float:
    return latencies[round(p / 100 * (len(latencies) - 1))] * 1000


print(f"{len(latencies)} {dict(sorted(statuses.items()))} {pct(50):.2f} {pct(99):.2f}")
sys.exit(0 if latencies else 1)
