#!/usr/bin/env python3
"""Create and drain rates of a running Taskforge, from outside, over HTTP.

    python3 scripts/rates.py http://127.0.0.1:8090 --metrics http://127.0.0.1:8091,http://127.0.0.1:8092

The queue `algo` is paused first (workers take nothing), then:
create: `wrk` (Debian's package) with 64 connections for --secs seconds
        POSTs one-stage, 0 ms tasks to /tasks; the figure is 202s per second.
drain:  --drain more tasks are created in batches of 1,000 (POST
        /tasks/batch), the queue is resumed, and the figure is tasks
        finished per second from the resume until the apis' counters
        (`taskforge_tasks_finished_total`, summed over every --metrics api)
        have risen by all that was queued.

It measures whatever it is pointed at (one api, or HAProxy in front of
several), so the single-node stack and the cluster are measured by the same
client in one session: docs/SCALING.md gives both. Only the standard library
and `wrk` are needed.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

TASK = {"stages": 1, "stage_ms": 0}
WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = '%s'
wrk.headers["Content-Type"] = "application/json"
response = function(status, headers, body)
  if status ~= 202 then
    io.stderr:write("status " .. status .. ": " .. body .. "\\n")
  end
end
""" % json.dumps(TASK)


def http(method, url, body=None, timeout=30):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout) as res:
        return res.status, res.read()


def finished(metrics_urls):
    total = 0.0
    for base in metrics_urls:
        _, text = http("GET", base.rstrip("/") + "/metrics")
        for line in text.decode().splitlines():
            if line.startswith("taskforge_tasks_finished_total"):
                total += float(line.rsplit(" ", 1)[1])
    return total


def create_rate(url, secs, connections):
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_SCRIPT)
        script = f.name
    try:
        out = subprocess.run(
            ["wrk", "-t2", f"-c{connections}", f"-d{secs}s", "-s", script, url.rstrip("/") + "/tasks"],
            check=True, capture_output=True, text=True,
        )
    finally:
        os.unlink(script)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out.stdout).group(1))
    sent = int(re.search(r"(\d+) requests in", out.stdout).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out.stdout)
    errors = len([l for l in out.stderr.splitlines() if l.startswith("status ")])
    if bad or errors:
        sys.exit(f"rates: create answered {bad.group(1) if bad else errors} non-202s:\n{out.stdout}{out.stderr[:2000]}")
    latency = re.search(r"Latency\s+(\S+)", out.stdout).group(1)
    return rate, latency, sent


def drain_rate(url, metrics_urls, count, queued, before):
    base = url.rstrip("/")
    try:
        for start in range(0, count, 1000):
            n = min(1000, count - start)
            status, body = http("POST", base + "/tasks/batch", {"tasks": [TASK] * n}, timeout=120)
            if status != 202:
                sys.exit(f"rates: a batch answered {status}: {body[:500]!r}")
    finally:
        http("POST", base + "/queues/algo/resume")
    t0 = time.monotonic()
    deadline = t0 + 600
    total = count + queued
    while finished(metrics_urls) < before + total:
        if time.monotonic() > deadline:
            sys.exit("rates: the drain did not finish within 600 s")
        time.sleep(0.05)
    return total / (time.monotonic() - t0)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url", help="the api (or the load balancer) base URL")
    p.add_argument("--metrics", required=True, help="comma-separated base URLs of every api process, for /metrics")
    p.add_argument("--secs", type=int, default=10, help="create: seconds of load (default 10)")
    p.add_argument("--connections", type=int, default=64, help="create: concurrent connections (default 64)")
    p.add_argument("--drain", type=int, default=10000, help="drain: tasks (default 10000)")
    a = p.parse_args()
    metrics = [m for m in a.metrics.split(",") if m]
    before = finished(metrics)
    http("POST", a.url.rstrip("/") + "/queues/algo/pause")
    try:
        rate, latency, sent = create_rate(a.url, a.secs, a.connections)
    except BaseException:
        http("POST", a.url.rstrip("/") + "/queues/algo/resume")
        raise
    print(f"create: {rate:.0f} tasks/s at {a.connections} connections (mean latency {latency})", flush=True)
    drain = drain_rate(a.url, metrics, a.drain, sent, before)
    print(f"drain: {drain:.0f} tasks/s ({a.drain + sent} tasks)", flush=True)


if __name__ == "__main__":
    main()
