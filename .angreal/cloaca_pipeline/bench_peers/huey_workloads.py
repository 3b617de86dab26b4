"""The bench workloads on Huey (SqliteHuey), run INSIDE the peer virtualenv .venvs/peer-huey.

usage: huey_workloads.py WORKLOAD --url sqlite:///PATH [--url ...] [options]
(the command line of bench_workloads.py; see peer_common.py). Prints ONE JSON
object on stdout, as bench_workloads.py does.

How each workload is expressed in Huey:
  w1    a pipeline of --chain tasks (`task.s().then(task)...`): each task is
        enqueued when its predecessor completes, with its result as argument.
  w2    a group of --fanout tasks whose callback (a chord) is the join task.
  w3    one task enqueued, its result read back; p50/p95 of call -> result.
  w4    --executions tasks enqueued at once; executions/s until all are done.
  cold  a new process: import huey, open the database, start a consumer,
        the first result.

The consumer runs in this process with thread workers. An idle worker polls
the queue table; POLL_S keeps that short so the figures are of Huey's work,
not of its back-off sleeps. The caller learns of completion from Huey's
SIGNAL_COMPLETE (sent after the result is stored) instead of polling the
result store, then reads the result. Every task returns a value, so every
task writes its result.

Durability: Huey removes a task from the queue when a worker takes it, so a
crash while it runs loses it (not durable in flight). SqliteHuey sets no
`synchronous` level unless given fsync=: it runs at SQLite's default, which
the JSON reports.
"""

from __future__ import annotations

import sys
import threading
import time

import huey
import peer_common as common
from huey import SqliteHuey, group
from huey.signals import SIGNAL_COMPLETE, SIGNAL_ERROR

#: Consumer worker threads (the GIL runs one no-op task at a time; a few keep the queue drained).
WORKERS = 4
#: How long an idle worker sleeps before polling the queue again, seconds.
POLL_S = 0.001


class Completions:
    """Task ids Huey has reported complete (or failed), for a caller to wait on."""

    def __init__(self):
        self.condition = threading.Condition()
        self.done: set[str] = set()
        self.errors: list[str] = []

    def completed(self, signal, task, *args, **kwargs):
        """SIGNAL_COMPLETE receiver: the task's result is stored."""
        with self.condition:
            self.done.add(task.id)
            self.condition.notify_all()

    def failed(self, signal, task, *args, **kwargs):
        """SIGNAL_ERROR receiver: wakes the waiter, which fails the run."""
        with self.condition:
            self.errors.append(f"task {task.name} {task.id} failed: {args[0] if args else 'unknown error'}")
            self.condition.notify_all()

    def wait(self, ids: set[str]) -> None:
        """Block until every id in `ids` completed; fail on a task error or after TIMEOUT_S."""
        with self.condition:
            finished = self.condition.wait_for(lambda: self.errors or ids <= self.done, common.TIMEOUT_S)
            if self.errors:
                common.fail(self.errors[0])
            if not finished:
                common.fail(f"{len(ids - self.done)} task(s) did not complete within {common.TIMEOUT_S} s")


class Bench:
    """One SqliteHuey on one database file, its tasks, and its in-process consumer."""

    def __init__(self, url: str):
        self.path = common.sqlite_path(url)
        self.huey = SqliteHuey(name="cloaca-bench", filename=self.path)
        self.completions = Completions()
        self.huey.signal(SIGNAL_COMPLETE)(self.completions.completed)
        self.huey.signal(SIGNAL_ERROR)(self.completions.failed)

        @self.huey.task()
        def step(value=0):
            """The no-op task; it adds one, so a pipeline's last result counts the tasks that ran."""
            return value + 1

        @self.huey.task()
        def join(results):
            """W2's join: how many results the chord gave it."""
            return len(results)

        self.step, self.join = step, join
        self.consumer = self.huey.create_consumer(
            workers=WORKERS,
            worker_type="thread",
            periodic=False,
            initial_delay=POLL_S,
            backoff=1.0,
            max_delay=POLL_S,
            check_worker_health=False,
        )

    def __enter__(self):
        self.consumer.start()
        return self

    def __exit__(self, *exc):
        self.consumer.stop(graceful=True)
        self.huey.storage.close()

    def call(self) -> int:
        """W3 / cold: one task, call -> result."""
        result = self.step(1)
        self.completions.wait({result.id})
        return result.get()

    def chain(self, length: int) -> int:
        """W1: a pipeline of `length` tasks; the last one's result (its length when all ran)."""
        pipeline = self.step.s(0)
        for _ in range(length - 1):
            pipeline = pipeline.then(self.step)
        # A pipeline's results come one per task; indexing them would block on each.
        last = list(self.huey.enqueue(pipeline))[-1]
        self.completions.wait({last.id})
        return last.get()

    def fanout(self, width: int) -> int:
        """W2: `width` tasks, then the join as their chord's callback; the join's result."""
        chord = self.huey.enqueue(group([self.step.s(i) for i in range(width)]).then(self.join))
        self.completions.wait({chord.callback.id})
        return chord.get()

    def burst(self, executions: int) -> int:
        """W4: `executions` tasks enqueued at once; how many stored a result."""
        results = [self.step(i) for i in range(executions)]
        self.completions.wait({r.id for r in results})
        return sum(1 for i, r in enumerate(results) if r.get() == i + 1)


def run_w3(urls: list[str], calls: int, warmup: int) -> dict:
    latencies_ms = []
    for url in urls:
        with Bench(url) as bench:
            for _ in range(warmup):
                common.expect("a 1-task call", bench.call(), 2)
            for _ in range(calls):
                started = time.perf_counter()
                value = bench.call()
                latencies_ms.append((time.perf_counter() - started) * 1000)
                common.expect("a 1-task call", value, 2)
    return common.latency_result(latencies_ms, len(urls))


def run_w1(urls: list[str], length: int) -> dict:
    per_task_ms, completed = [], []
    for url in urls:
        with Bench(url) as bench:
            started = time.perf_counter()
            value = bench.chain(length)
            per_task_ms.append((time.perf_counter() - started) * 1000 / length)
            common.expect("the chain's last task", value, length)
            # Each task adds one to its predecessor's result: the last one's is the tasks that ran.
            completed.append(value)
    return common.chain_result(per_task_ms, length, completed)


def run_w2(urls: list[str], width: int) -> dict:
    rates, completed = [], []
    for url in urls:
        with Bench(url) as bench:
            started = time.perf_counter()
            value = bench.fanout(width)
            rates.append((width + 1) / (time.perf_counter() - started))
            common.expect("the join (results it was given)", value, width)
            completed.append(value + 1)  # the fanned-out tasks the join was given, and the join
    return common.fanout_result(rates, width + 1, completed)


def run_w4(urls: list[str], executions: int) -> dict:
    rates, completed = [], []
    for url in urls:
        with Bench(url) as bench:
            started = time.perf_counter()
            value = bench.burst(executions)
            rates.append(executions / (time.perf_counter() - started))
            common.expect("tasks with their result stored", value, executions)
            completed.append(value)
    return common.burst_result(rates, executions, completed)


def cold_child(url: str) -> None:
    with Bench(url) as bench:
        common.expect("the cold call", bench.call(), 2)
        common.report_ready()


def about(url: str) -> dict:
    """What every result says of Huey: its version and the durability its database runs with."""
    settings = common.sqlite_settings(common.sqlite_path(url))
    durability = (
        f"SQLite journal_mode={settings['journal_mode']}, synchronous={settings['synchronous']} "
        "(SQLite's default; SqliteHuey sets none); a task is off the queue while it runs: not durable in flight"
    )
    return {"peer": "huey", "version": huey.__version__, "durability": durability}


def main(argv: list[str]) -> None:
    common.run_main(argv, "the bench workloads on Huey (see docs/benchmarks.md)", sys.modules[__name__], about)


if __name__ == "__main__":
    main(sys.argv[1:])
