"""The bench workloads on DBOS, run INSIDE the peer virtualenv .venvs/peer-dbos.

usage: dbos_workloads.py WORKLOAD --url URL [--url ...] [options]
(the command line of bench_workloads.py; see peer_common.py). URL is
sqlite:///PATH or a PostgreSQL URL (postgres:// or postgresql://) of a fresh
database: DBOS's system database. Prints ONE JSON object on stdout.

How each workload is expressed in DBOS (no-op tasks are @DBOS.step functions):
  w1    a workflow that calls --chain steps one after the other.
  w2    a workflow that enqueues --fanout steps on a queue, waits for their
        handles, then calls the join step.
  w3    a 1-step workflow called directly; p50/p95 of call -> result.
  w4    --executions 1-step workflows enqueued on a queue at once;
        executions/s until every handle has its result.
  cold  a new process: import dbos, configure, launch, the first result.

DBOS is a singleton: each run configures it on its database, launches it and
destroys it afterwards. A queue's worker and a handle's get_result poll the
system database; POLL_S is set far below DBOS's default of one second for
both, so that queued work starts, and a result is seen, when it is ready.

Durability: every step's output and every workflow's status is committed to
the system database before the workflow goes on. On SQLite DBOS sets no
`synchronous` level, so it runs at SQLite's default (FULL) with SQLite's
default journal; on PostgreSQL, at the server's settings. The JSON reports both.
"""

from __future__ import annotations

import sys
import threading
import time

import peer_common as common
from dbos import DBOS

#: How often a queue's worker looks for queued work, and a handle for its result, seconds.
POLL_S = 0.005
QUEUE = "cloaca_bench"


@DBOS.step()
def step(value: int) -> int:
    """The no-op task; it adds one, so a chain's last value counts the steps that ran."""
    return value + 1


@DBOS.step()
def join(results: list) -> int:
    """W2's join: how many results it was given."""
    return len(results)


@DBOS.workflow()
def single() -> int:
    """W3, W4 and cold: a 1-step workflow."""
    return step(1)


@DBOS.workflow()
def chain(length: int) -> int:
    """W1: `length` steps one after the other."""
    value = 0
    for _ in range(length):
        value = step(value)
    return value


@DBOS.workflow()
def fanout(width: int) -> int:
    """W2: `width` steps on the queue at once, then the join of their results."""
    queue = DBOS.retrieve_queue(QUEUE)
    handles = [queue.enqueue(step, i) for i in range(width)]
    return join([h.get_result(polling_interval_sec=POLL_S) for h in handles])


def dbos_url(url: str) -> str:
    """The URL in SQLAlchemy's spelling: sqlite:////ABSOLUTE/PATH, and postgresql:// (not postgres://).

    The bench's sqlite:///PATH always names an absolute path; SQLAlchemy reads
    three slashes as a relative one.
    """
    if url.startswith("sqlite:"):
        return "sqlite:///" + common.sqlite_path(url)
    return "postgresql://" + url.split("://", 1)[1] if url.startswith("postgres://") else url


def wait_for_queue_worker() -> None:
    """Block until DBOS runs the worker thread of the bench's queue.

    DBOS looks for newly registered queues about once a second; a measurement
    started before that would time the discovery, which a long-running
    application pays once, not per workflow.
    """
    deadline = time.monotonic() + common.TIMEOUT_S
    while not any(t.name == f"queue-worker-{QUEUE}" and t.is_alive() for t in threading.enumerate()):
        if time.monotonic() > deadline:
            common.fail(f"DBOS started no worker for the queue {QUEUE!r} within {common.TIMEOUT_S} s")
        time.sleep(0.01)


class Bench:
    """DBOS configured and launched on one database, with the bench's queue if asked; destroyed on exit."""

    def __init__(self, url: str, queue: bool = False):
        self.url = dbos_url(url)
        self.with_queue = queue

    def __enter__(self):
        DBOS(
            config={
                "name": "cloaca-bench",
                "system_database_url": self.url,
                "run_admin_server": False,
                "log_level": "WARNING",
                "enable_otlp": False,
            }
        )
        DBOS.launch()
        if self.with_queue:
            self.queue = DBOS.register_queue(QUEUE, polling_interval_sec=POLL_S)
            wait_for_queue_worker()
        return self

    def __exit__(self, *exc):
        DBOS.destroy()

    def burst(self, executions: int) -> int:
        """W4: `executions` 1-step workflows enqueued at once; how many returned their result."""
        handles = [self.queue.enqueue(single) for _ in range(executions)]
        return sum(1 for h in handles if h.get_result(polling_interval_sec=POLL_S) == 2)


def durability(url: str) -> str:
    """The durability settings this run's database had, read from it."""
    if url.startswith("sqlite"):
        settings = common.sqlite_settings(common.sqlite_path(url))
        return (
            f"SQLite journal_mode={settings['journal_mode']}, synchronous={settings['synchronous']} "
            "(SQLite's defaults; DBOS sets neither); every step output and workflow status committed"
        )
    import psycopg

    with psycopg.connect(dbos_url(url)) as connection:
        shown = {name: connection.execute(f"SHOW {name}").fetchone()[0] for name in ("fsync", "synchronous_commit")}
    return (
        f"PostgreSQL fsync={shown['fsync']}, synchronous_commit={shown['synchronous_commit']}; "
        "every step output and workflow status committed"
    )


def run_w3(urls: list[str], calls: int, warmup: int) -> dict:
    latencies_ms = []
    for url in urls:
        with Bench(url):
            for _ in range(warmup):
                common.expect("a 1-step workflow", single(), 2)
            for _ in range(calls):
                started = time.perf_counter()
                value = single()
                latencies_ms.append((time.perf_counter() - started) * 1000)
                common.expect("a 1-step workflow", value, 2)
    return common.latency_result(latencies_ms, len(urls))


def run_w1(urls: list[str], length: int) -> dict:
    per_task_ms, completed = [], []
    for url in urls:
        with Bench(url):
            started = time.perf_counter()
            value = chain(length)
            per_task_ms.append((time.perf_counter() - started) * 1000 / length)
            common.expect("the chain's last step", value, length)
            # Each task adds one to its predecessor's result: the last one's is the tasks that ran.
            completed.append(value)
    return common.chain_result(per_task_ms, length, completed)


def run_w2(urls: list[str], width: int) -> dict:
    rates, completed = [], []
    for url in urls:
        with Bench(url, queue=True):
            started = time.perf_counter()
            value = fanout(width)
            rates.append((width + 1) / (time.perf_counter() - started))
            common.expect("the join (results it was given)", value, width)
            completed.append(value + 1)  # the fanned-out tasks the join was given, and the join
    return common.fanout_result(rates, width + 1, completed)


def run_w4(urls: list[str], executions: int) -> dict:
    rates, completed = [], []
    for url in urls:
        with Bench(url, queue=True) as bench:
            started = time.perf_counter()
            value = bench.burst(executions)
            rates.append(executions / (time.perf_counter() - started))
            common.expect("workflows that returned their result", value, executions)
            completed.append(value)
    return common.burst_result(rates, executions, completed)


def cold_child(url: str) -> None:
    with Bench(url):
        common.expect("the cold workflow", single(), 2)
        common.report_ready()


def about(url: str) -> dict:
    """What every result says of DBOS: its version and the durability its database runs with."""
    from importlib.metadata import version

    return {"peer": "dbos", "version": version("dbos"), "durability": durability(url)}


def main(argv: list[str]) -> None:
    common.run_main(argv, "the bench workloads on DBOS (see docs/benchmarks.md)", sys.modules[__name__], about)


if __name__ == "__main__":
    main(sys.argv[1:])
