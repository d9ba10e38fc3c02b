"""Runs one benchmark scenario against the Celery peer and prints its figures.

The `bench` crate runs this once per scenario, pool and confirm mode, each in
a RabbitMQ vhost and Redis key prefix of its own (it makes and deletes them;
for a manual run, see --help and peer_check.sh). The driver starts the Celery
worker(s) itself as subprocesses, waits for them to answer a ping, runs the
scenario from this process as the one client, stops the workers and prints
ONE JSON object on stdout:

  {"values": {"dispatch.p50_ms": 2.9, ...}, "latencies": [...], "notes": [...]}

The scenarios mirror bench/src/scenarios.rs:

  create    N sequential apply_async (confirmed when confirms are on), no worker running
  dispatch  one task at a time, 1 stage of 0 ms: before apply_async → the client sees SUCCESS
            (AsyncResult.get: the Redis backend waits by pub/sub); after 10 warm-up tasks
  drain     N queued 0 ms tasks, then the worker(s) start; rate between 10 % and 90 % SUCCESS
  makespan  N queued tasks of one stage_ms stage, then one worker of --concurrency starts;
            worker ready (first ping answered, or the first task's start if earlier)
            → the last SUCCESS's date_done
  cancel    a task of one stage_ms stage is STARTED, 50 ms later revoke(terminate=True);
            → the client sees REVOKED (AsyncResult.get raises TaskRevokedError)
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime

HERE = os.path.dirname(os.path.abspath(__file__))
POOLS = ("prefork", "threads", "gevent")


def percentile(samples, p):
    """Nearest rank, like bench/src/stats.rs; None when empty."""
    if not samples:
        return None
    s = sorted(samples)
    rank = int(-(-(p / 100.0) * len(s) // 1))  # ceil
    return s[min(max(rank, 1), len(s)) - 1]


def log(msg):
    print(f"driver: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# workers
# ---------------------------------------------------------------------------


def tree_rss_mb(pid):
    """Resident memory of a process and its descendants, MiB (shared pages counted in each)."""
    total, stack = 0.0, [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) / 1024.0
            with open(f"/proc/{p}/task/{p}/children") as f:
                stack.extend(int(c) for c in f.read().split())
        except (OSError, ValueError):
            continue
    return total


class Worker:
    """A `celery worker` subprocess (in a process group of its own, so its pool goes with it)."""

    def __init__(self, args, name, concurrency):
        self.name = f"{name}@bench"
        self.log_path = os.path.join(args.log_dir, f"celery-{args.pool}-{name}.log")
        cmd = [
            sys.executable, "-m", "celery", "-A", "celery_app", "worker",
            f"--pool={args.pool}", f"--concurrency={concurrency}",
            f"--loglevel={os.environ.get('PEER_WORKER_LOGLEVEL', 'WARNING')}", "--without-gossip", "--without-mingle", "--without-heartbeat",
            "-n", self.name, "-Q", "peer.algo",
        ]
        self.log_file = open(self.log_path, "w")
        self.spawned = time.time()
        self.proc = subprocess.Popen(
            cmd, cwd=HERE, env=os.environ.copy(), stdin=subprocess.DEVNULL,
            stdout=self.log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.ready_at = None

    def tail(self):
        try:
            with open(self.log_path) as f:
                return "".join(f.readlines()[-20:])
        except OSError:
            return ""

    def ensure_running(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"worker {self.name} exited {self.proc.returncode}:\n{self.tail()}")

    def wait_ready(self, app, timeout=60.0):
        """Until the worker answers a ping (its consumer is up)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.ensure_running()
            if app.control.ping(destination=[self.name], timeout=0.2):
                self.ready_at = time.time()
                return
        raise RuntimeError(f"worker {self.name} not ready in {timeout} s:\n{self.tail()}")

    def stop(self):
        """Cold shutdown, then the whole group is killed if it lingers.

        Nothing is running by now (every task was seen finished), and the
        vhost goes afterwards. An idle worker often notices the signal only
        10 s later (its main thread blocked in a read), which would only
        lengthen the bench: after 2 s it is killed."""
        t = time.time()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.log_file.close()
        log(f"worker {self.name}: ready {self.ready_at - self.spawned if self.ready_at else float('nan'):.2f} s after spawn, stopped in {time.time() - t:.2f} s")


def start_workers(args, app, count, concurrency):
    workers = [Worker(args, f"peer{i}", concurrency) for i in range(count)]
    try:
        for w in workers:
            w.wait_ready(app)
    except BaseException:
        stop_workers(workers)
        raise
    return workers


def stop_workers(workers):
    for w in workers:
        w.stop()


# ---------------------------------------------------------------------------
# scenarios
# ---------------------------------------------------------------------------


def meta_key(app, task_id):
    return app.backend.get_key_for_task(task_id)


def read_states(app, keys):
    """Each task's stored meta (None while nothing is stored), in one MGET."""
    return [json.loads(v) if v else None for v in app.backend.client.mget(keys)]


def done_count(app, keys, state="SUCCESS"):
    needle = f'"status": "{state}"'.encode()
    return sum(1 for v in app.backend.client.mget(keys) if v and needle in v)


def submit(algo, n, stage_ms):
    return [algo.apply_async((1, stage_ms)) for _ in range(n)]


def scenario_create(args, app, algo, out):
    submit(algo, args.warmup, 0)
    lat = []
    t = time.perf_counter()
    for _ in range(args.count):
        t0 = time.perf_counter()
        algo.apply_async((1, 0))
        lat.append((time.perf_counter() - t0) * 1e3)
    elapsed = time.perf_counter() - t
    out["values"]["create.c1.rate"] = args.count / elapsed
    out["values"]["create.c1.p50_ms"] = percentile(lat, 50)
    out["values"]["create.c1.p99_ms"] = percentile(lat, 99)


def scenario_dispatch(args, app, algo, out):
    workers = start_workers(args, app, 1, args.concurrency)
    try:
        warmup = min(10, args.count)
        for i in range(warmup + args.count):
            t0 = time.perf_counter()
            r = algo.apply_async((1, 0))
            r.get(timeout=30)
            if r.state != "SUCCESS":
                raise RuntimeError(f"dispatch task {r.id} ended {r.state}")
            if i >= warmup:
                out["latencies"].append((time.perf_counter() - t0) * 1e3)
    finally:
        stop_workers(workers)
    lat = out["latencies"]
    out["values"]["dispatch.p50_ms"] = percentile(lat, 50)
    out["values"]["dispatch.p99_ms"] = percentile(lat, 99)
    out["values"]["dispatch.mean_ms"] = sum(lat) / len(lat)


def crossing(series, target):
    for (t0, c0), (t1, c1) in zip(series, series[1:]):
        if c0 < target <= c1:
            return t0 + (t1 - t0) * (target - c0) / (c1 - c0)
    return None


def scenario_drain(args, app, algo, out):
    n = args.count
    keys = [meta_key(app, r.id) for r in submit(algo, n, 0)]
    started = time.time()
    workers = [Worker(args, f"peer{i}", args.concurrency) for i in range(args.workers)]
    try:
        series = [(0.0, 0)]
        deadline = started + 60 + n / 50
        while True:
            done = done_count(app, keys)
            series.append((time.time() - started, done))
            if done >= n:
                break
            if time.time() > deadline:
                raise RuntimeError(f"drain: only {done} of {n} tasks SUCCESS in {time.time() - started:.1f} s")
            for w in workers:
                w.ensure_running()
            time.sleep(0.05)
        wall = time.time() - started
    finally:
        stop_workers(workers)
    t10, t90 = crossing(series, 0.1 * n), crossing(series, 0.9 * n)
    rate = 0.8 * n / (t90 - t10) if t10 is not None and t90 is not None and t90 > t10 else n / wall
    out["values"]["drain.rate"] = rate
    out["values"]["drain.overall_rate"] = n / wall
    out["values"]["drain.wall_s"] = wall


def scenario_makespan(args, app, algo, out):
    n, stage_ms = args.count, args.stage_ms
    keys = [meta_key(app, r.id) for r in submit(algo, n, stage_ms)]
    workers = start_workers(args, app, 1, args.concurrency)
    w = workers[0]
    peak_rss = 0.0
    try:
        deadline = w.ready_at + stage_ms * 3 / 1e3 + 60
        while True:
            peak_rss = max(peak_rss, tree_rss_mb(w.proc.pid))
            done = done_count(app, keys)
            if done >= n:
                break
            if time.time() > deadline:
                raise RuntimeError(f"makespan: only {done} of {n} tasks SUCCESS in {time.time() - w.ready_at:.1f} s")
            w.ensure_running()
            time.sleep(0.02)
    finally:
        stop_workers(workers)
    metas = read_states(app, keys)
    finished = [datetime.fromisoformat(m["date_done"]).timestamp() for m in metas]
    started = [m["result"]["started_at"] for m in metas]
    # Celery's consumer takes tasks before the worker answers the first ping
    # (polled every 0.2 s), so the makespan starts at whichever came first:
    # like ours, from ready (or the first claim, when that is earlier).
    begin = min(w.ready_at, min(started))
    secs = max(finished) - begin
    out["values"]["makespan.s"] = secs
    out["values"]["makespan.first_start_s"] = min(started) - w.ready_at
    out["values"]["makespan.start_spread_s"] = max(started) - min(started)
    out["values"]["makespan.ratio"] = secs / (stage_ms / 1e3)
    out["values"]["makespan.n"] = n
    out["values"]["makespan.concurrency"] = args.concurrency
    out["values"]["makespan.worker_rss_mb"] = peak_rss
    out["values"]["makespan.worker_startup_s"] = w.ready_at - w.spawned


def wait_started(r, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = r.state
        if state in ("STARTED", "PROGRESS"):
            return
        if state not in ("PENDING",):
            raise RuntimeError(f"cancel task {r.id} is {state} before the revoke")
        time.sleep(0.001)
    raise RuntimeError(f"cancel task {r.id} not STARTED within {timeout} s")


def scenario_cancel(args, app, algo, out):
    from celery.exceptions import TaskRevokedError

    if args.pool == "threads":
        # Celery's threads pool has no terminate_job: revoke(terminate=True)
        # cannot stop a running task there, so there is nothing to measure.
        out["notes"].append("threads pool: revoke(terminate=True) is not supported (no terminate_job)")
        out["values"]["cancel.supported"] = 0
        return
    workers = start_workers(args, app, 1, args.concurrency)
    try:
        for _ in range(args.count):
            r = algo.apply_async((1, args.stage_ms))
            wait_started(r)
            # Like ours: let the stage itself begin.
            time.sleep(0.05)
            t0 = time.perf_counter()
            app.control.revoke(r.id, terminate=True, signal="SIGTERM")
            try:
                r.get(timeout=10)
                raise RuntimeError(f"revoked task {r.id} ended {r.state}")
            except TaskRevokedError:
                out["latencies"].append((time.perf_counter() - t0) * 1e3)
            for w in workers:
                w.ensure_running()
    finally:
        stop_workers(workers)
    out["values"]["cancel.supported"] = 1
    out["values"]["cancel.p50_ms"] = percentile(out["latencies"], 50)
    out["values"]["cancel.p99_ms"] = percentile(out["latencies"], 99)


SCENARIOS = {
    "create": scenario_create,
    "dispatch": scenario_dispatch,
    "drain": scenario_drain,
    "makespan": scenario_makespan,
    "cancel": scenario_cancel,
}


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", required=True, choices=sorted(SCENARIOS))
    p.add_argument("--pool", default="threads", choices=POOLS)
    p.add_argument("--concurrency", type=int, default=16, help="per worker")
    p.add_argument("--workers", type=int, default=2, help="drain only: workers started together")
    p.add_argument("--count", type=int, required=True, help="tasks measured")
    p.add_argument("--warmup", type=int, default=100, help="create only: apply_async calls before the measured ones")
    p.add_argument("--stage-ms", type=int, default=2000, help="makespan and cancel: the stage's length")
    p.add_argument("--confirm", choices=("on", "off"), default="on", help="publisher confirms")
    p.add_argument("--prefetch", type=int, default=4, help="worker_prefetch_multiplier")
    p.add_argument("--broker-url", required=True, help="amqp://guest:guest@127.0.0.1:5672/<vhost of this run>")
    p.add_argument("--redis-url", required=True, help="redis://127.0.0.1:6379/0")
    p.add_argument("--prefix", required=True, help="this run's Redis key prefix")
    p.add_argument("--log-dir", default=None, help="worker logs [default: a fresh temp dir]")
    return p.parse_args(argv)


def main(argv):
    args = parse_args(argv)
    # The bench sends SIGTERM when a run overstays: unwind, so the finally
    # blocks stop the workers (they are in process groups of their own).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args.log_dir = args.log_dir or tempfile.mkdtemp(prefix="taskforge-peer-")
    os.makedirs(args.log_dir, exist_ok=True)
    # The worker subprocesses read the same settings (celery_app.py).
    os.environ.update({
        "PEER_BROKER_URL": args.broker_url,
        "PEER_REDIS_URL": args.redis_url,
        "PEER_PREFIX": args.prefix,
        "PEER_CONFIRM": "1" if args.confirm == "on" else "0",
        "PEER_PREFETCH": str(args.prefetch),
    })
    sys.path.insert(0, HERE)
    # Only the JSON goes to stdout: anything a library prints goes to stderr.
    real_stdout, sys.stdout = sys.stdout, sys.stderr
    from celery_app import algo, app  # noqa: E402 (configured from the environment above)

    out = {"values": {}, "latencies": [], "notes": []}
    t = time.time()
    try:
        SCENARIOS[args.scenario](args, app, algo, out)
    finally:
        app.close()
    out["values"][f"{args.scenario}.driver_s"] = time.time() - t
    real_stdout.write(json.dumps(out) + "\n")
    real_stdout.flush()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except Exception as e:  # one line for the bench's error message, the trace above it
        import traceback

        traceback.print_exc()
        print(f"driver: {e}", file=sys.stderr)
        sys.exit(1)
