"""The Celery peer of Taskforge, for the benchmark's side-by-side figures.

Configured from the environment by driver.py (the worker subprocess inherits
it), with the guarantees Taskforge gives: persistent messages on a durable
queue in the run's own RabbitMQ vhost, late acks (a task is acknowledged
after it ran, so a dead worker's task is delivered again), the STARTED state
recorded, one PROGRESS update per stage, results in Redis under the run's
own key prefix, and publisher confirms unless PEER_CONFIRM=0.

  PEER_BROKER_URL   amqp://guest:guest@127.0.0.1:5672/<vhost>
  PEER_REDIS_URL    redis://127.0.0.1:6379/0
  PEER_PREFIX       the run's Redis key prefix, e.g. bench:0123456789ab:
  PEER_CONFIRM      1 (default) or 0: publisher confirms on every publish
  PEER_PREFETCH     worker_prefetch_multiplier (default 4)
"""

import os
import time

from celery import Celery
from kombu import Exchange, Queue

QUEUE = "peer.algo"


def _env(name, default=None):
    value = os.environ.get(name, default)
    if value is None:
        raise SystemExit(f"celery_app: {name} is not set (driver.py sets it)")
    return value


def confirm_enabled():
    return _env("PEER_CONFIRM", "1") not in ("0", "false", "no", "")


app = Celery("taskforge_peer", broker=_env("PEER_BROKER_URL"), backend=_env("PEER_REDIS_URL"))
app.conf.update(
    # Our tasks' guarantees: acked after running, STARTED recorded, persistent
    # messages on a durable queue.
    task_acks_late=True,
    task_track_started=True,
    task_reject_on_worker_lost=True,
    task_default_delivery_mode="persistent",
    task_queues=[Queue(QUEUE, Exchange(QUEUE, type="direct", durable=True), routing_key=QUEUE, durable=True)],
    task_default_queue=QUEUE,
    task_default_exchange=QUEUE,
    task_default_routing_key=QUEUE,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    # Prefetch = multiplier × concurrency; 4 keeps a worker fed between
    # deliveries without hoarding (with acks_late a prefetched task is still
    # redelivered if the worker dies).
    worker_prefetch_multiplier=int(_env("PEER_PREFETCH", "4")),
    broker_transport_options={"confirm_publish": confirm_enabled()},
    broker_connection_retry_on_startup=True,
    result_backend_transport_options={"global_keyprefix": _env("PEER_PREFIX")},
    result_expires=3600,
    # The bench deletes the vhost afterwards; no events (Taskforge has none either).
    worker_send_task_events=False,
    task_send_sent_event=False,
    worker_hijack_root_logger=False,
)


@app.task(bind=True, name="peer.algo")
def algo(self, stages, stage_ms):
    """Like Taskforge's routine: `stages` stages of `stage_ms` each, a PROGRESS update after each.

    The result carries when the task began (Taskforge records `started_at`;
    Celery's STARTED state has no time), for the makespan."""
    started_at = time.time()
    for stage in range(1, stages + 1):
        time.sleep(stage_ms / 1000.0)
        self.update_state(state="PROGRESS", meta={"stage": stage, "stages": stages})
    return {"stages": stages, "started_at": started_at}
