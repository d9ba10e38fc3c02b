"""Quick sanity check of the Celery peer, outside the bench: tiny counts of
every scenario (or those named) for one pool and confirm mode, in a RabbitMQ
vhost and Redis key prefix made for it (management API, guest/guest) and
deleted afterwards. Prints each scenario's JSON line; exits non-zero on any
failure.

  run/peer-venv/bin/python bench/peer/check.py --pool threads --confirm on
  run/peer-venv/bin/python bench/peer/check.py --pool prefork dispatch cancel
"""

import argparse
import base64
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid

import redis

HERE = os.path.dirname(os.path.abspath(__file__))
SIZES = {  # scenario: (count, extra driver arguments)
    "create": (50, ["--warmup", "10"]),
    "dispatch": (5, []),
    "drain": (50, ["--workers", "2"]),
    "makespan": (8, ["--stage-ms", "500"]),  # one wave at the default --concurrency 8
    "cancel": (3, ["--stage-ms", "3000"]),
}


def mgmt(url, method, path, body=None):
    req = urllib.request.Request(f"{url}/api{path}", method=method)
    req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, data=data, timeout=15) as resp:
        return resp.status


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenarios", nargs="*", help=f"any of {', '.join(SIZES)} [default: all]")
    p.add_argument("--pool", default="threads")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--confirm", default="on", choices=("on", "off"))
    p.add_argument("--amqp-host", default="127.0.0.1:5672")
    p.add_argument("--mgmt-url", default="http://127.0.0.1:15672")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = p.parse_args()
    unknown = set(args.scenarios) - set(SIZES)
    if unknown:
        p.error(f"unknown scenarios {sorted(unknown)}")
    args.scenarios = args.scenarios or list(SIZES)

    run_id = uuid.uuid4().hex[:12]
    vhost, prefix = f"taskforge-peer-check-{run_id}", f"peercheck:{run_id}:"
    mgmt(args.mgmt_url, "PUT", f"/vhosts/{vhost}")
    mgmt(args.mgmt_url, "PUT", f"/permissions/{vhost}/guest", {"configure": ".*", "write": ".*", "read": ".*"})
    failed = 0
    try:
        for scenario in args.scenarios:
            count, extra = SIZES[scenario]
            cmd = [
                sys.executable, os.path.join(HERE, "driver.py"), "--scenario", scenario,
                "--pool", args.pool, "--concurrency", str(args.concurrency), "--confirm", args.confirm,
                "--count", str(count), "--broker-url", f"amqp://guest:guest@{args.amqp_host}/{vhost}",
                "--redis-url", args.redis_url, "--prefix", prefix, *extra,
            ]
            t = time.time()
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            if res.returncode != 0:
                failed += 1
                print(f"{scenario}: FAILED ({res.returncode})\n{res.stderr[-3000:]}")
                continue
            for line in res.stderr.splitlines():
                if line.startswith("driver:"):
                    print(f"  {line}")
            out = json.loads(res.stdout)
            out["latencies"] = [round(x, 2) for x in out["latencies"]]
            print(f"{scenario} ({time.time() - t:.1f} s): {json.dumps(out)}")
    finally:
        mgmt(args.mgmt_url, "DELETE", f"/vhosts/{vhost}")
        r = redis.Redis.from_url(args.redis_url)
        keys = list(r.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            r.unlink(*keys)
        print(f"cleaned up vhost {vhost} and {len(keys)} keys under {prefix}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
