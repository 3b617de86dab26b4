"""The engine workloads `bench` measures against its targets, run INSIDE a backend's virtualenv.

This is a standalone script, not part of the pipeline package: `angreal cloaca
bench` (cloaca_pipeline/bench.py) runs it with the bench virtualenv's
interpreter, where `import cloaca` loads the release build. It prints ONE JSON
object on stdout; anything for humans goes to stderr.

usage: bench_workloads.py WORKLOAD --url URL [--url URL ...] [options]

WORKLOAD is one of
  w3    1-task workflow, call -> result latency: --warmup calls, then --calls
        timed calls per run; p50/p95 over the timed calls of every run.
  w1    chain of --chain tasks: ms per task (median of the runs).
  w2    fan-out of --fanout tasks plus a join task: tasks/s (median of the runs).
  w4    --executions 1-task workflows submitted at once with execute_async:
        executions/s until every one is done (median of the runs).
  cold  new process -> import cloaca -> open runner -> first 1-task result, ms
        (median of one fresh process per run).
  history
        W1, W2 and list_executions (by workflow, by status) on an empty
        database (--url) and on one holding --history completed task rows
        (--history-url, loaded with SQL, not by running them), one pair per
        run; then the loaded history is pruned and its deletion timed.
  memory
        per run: bytes on disk per stored task and per completed execution
        (--stored task rows, as executions of a chain of --chain tasks, on
        the run's database), then, in a fresh child process on the same
        database, bytes of process RSS per queued execution (--queued 1-task
        executions submitted while every worker is held busy); medians of
        the runs.

Each --url is one run's database (the caller makes each one fresh), so the
number of runs is the number of --url options. Tasks are no-ops: the figures
are the engine's overhead. A run whose execution does not complete exits 1
with the execution's error on stderr.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit

#: Printed by a cold child once it holds its first result (the parent stops its clock there).
COLD_READY_LINE = "cloaca-bench-cold-ready"
#: How long one cold child may take before the measurement is abandoned.
COLD_CHILD_TIMEOUT_S = 120
#: Tasks of each execution of the loaded history (the 100-task chain of the report that led to it).
HISTORY_TASKS = 100
#: Timed list_executions calls per database, after as many untimed ones.
LIST_CALLS = 50
#: How long one memory child (the queued-executions measurement) may take.
MEMORY_CHILD_TIMEOUT_S = 900


def noop_task(task_id: str):
    """A fresh no-op task function (one object per task: the decorator tags it with its id)."""

    def noop(ctx):
        return None

    noop.__name__ = task_id
    return noop


def define_single(cloaca, name: str) -> None:
    """The W3 / cold workflow: one no-op task."""
    with cloaca.WorkflowBuilder(name) as builder:
        builder.description("bench: one no-op task")
        cloaca.task(id="only")(noop_task("only"))


def define_chain(cloaca, name: str, length: int) -> None:
    """The W1 workflow: t0000 -> t0001 -> ... (length no-op tasks in a line)."""
    with cloaca.WorkflowBuilder(name) as builder:
        builder.description(f"bench: chain of {length} no-op tasks")
        previous = None
        for i in range(length):
            task_id = f"t{i:04d}"
            dependencies = [previous] if previous else None
            cloaca.task(id=task_id, dependencies=dependencies)(noop_task(task_id))
            previous = task_id


def define_fanout(cloaca, name: str, width: int) -> None:
    """The W2 workflow: `width` independent no-op tasks, then one join depending on all."""
    with cloaca.WorkflowBuilder(name) as builder:
        builder.description(f"bench: fan-out of {width} no-op tasks + join")
        ids = [f"f{i:04d}" for i in range(width)]
        for task_id in ids:
            cloaca.task(id=task_id)(noop_task(task_id))
        cloaca.task(id="join", dependencies=ids)(noop_task("join"))


def require_completed(result, what: str) -> None:
    """Stop the whole measurement if an execution did not complete: its figure would lie."""
    if result.status != "Completed":
        print(f"bench: {what} ended {result.status}: {result.error_message}", file=sys.stderr)
        raise SystemExit(1)


def timed_execute(runner, name: str) -> float:
    """Run `name` once, blocking; the call -> result wall time in seconds."""
    started = time.perf_counter()
    result = runner.execute(name, {})
    elapsed = time.perf_counter() - started
    require_completed(result, f"workflow {name!r}")
    return elapsed


def percentile(samples: list[float], fraction: float) -> float:
    """Nearest-rank percentile (no interpolation: every reported value was observed)."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def run_w3(cloaca, urls: list[str], calls: int, warmup: int) -> dict:
    """1-task workflow latency, pooled over the runs (each on its own database)."""
    define_single(cloaca, "bench_w3")
    latencies_ms = []
    for url in urls:
        with cloaca.DefaultRunner(url) as runner:
            # The first calls pay for lazily warmed caches (statements, threads);
            # they are what `cold` measures, not what W3 measures.
            for _ in range(warmup):
                timed_execute(runner, "bench_w3")
            latencies_ms += [timed_execute(runner, "bench_w3") * 1000 for _ in range(calls)]
    return {
        "workload": "w3",
        "runs": len(urls),
        "calls": len(latencies_ms),
        "p50_ms": percentile(latencies_ms, 0.50),
        "p95_ms": percentile(latencies_ms, 0.95),
    }


def run_w1(cloaca, urls: list[str], length: int) -> dict:
    """Chain of `length` tasks: ms per task, median over the runs."""
    define_chain(cloaca, "bench_w1", length)
    per_task_ms = []
    for url in urls:
        with cloaca.DefaultRunner(url) as runner:
            per_task_ms.append(timed_execute(runner, "bench_w1") * 1000 / length)
    return {
        "workload": "w1",
        "runs": len(urls),
        "tasks": length,
        "ms_per_task": statistics.median(per_task_ms),
        "per_run_ms_per_task": per_task_ms,
    }


def run_w2(cloaca, urls: list[str], width: int) -> dict:
    """Fan-out of `width` tasks + join: tasks/s (join included), median over the runs."""
    define_fanout(cloaca, "bench_w2", width)
    tasks = width + 1
    rates = []
    for url in urls:
        with cloaca.DefaultRunner(url) as runner:
            rates.append(tasks / timed_execute(runner, "bench_w2"))
    return {
        "workload": "w2",
        "runs": len(urls),
        "tasks": tasks,
        "tasks_per_s": statistics.median(rates),
        "per_run_tasks_per_s": rates,
    }


def run_w4(cloaca, urls: list[str], executions: int) -> dict:
    """`executions` 1-task workflows submitted at once: executions/s to all done, median over the runs."""
    define_single(cloaca, "bench_w4")
    rates = []
    for url in urls:
        with cloaca.DefaultRunner(url) as runner:
            started = time.perf_counter()
            handles = [runner.execute_async("bench_w4", {}) for _ in range(executions)]
            results = [handle.wait() for handle in handles]
            rates.append(executions / (time.perf_counter() - started))
            for result in results:
                require_completed(result, "a W4 execution")
    return {
        "workload": "w4",
        "runs": len(urls),
        "executions": executions,
        "executions_per_s": statistics.median(rates),
        "per_run_executions_per_s": rates,
    }


def history_sql(executions: int, now_ms: int) -> str:
    """Completed executions of HISTORY_TASKS tasks each, finished a month ago, as SQL both backends run.

    A workflow of its own (`bench_history`), so the figures measured beside it
    are of the bench's workflows on a database that also holds a long history.
    """
    start = now_ms - 30 * 86_400_000
    return f"""
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {executions})
        INSERT INTO cloaca_executions (id, workflow_name, workflow_version, status, input_context, final_context,
                                       tasks_remaining, created_at, started_at, finished_at)
        SELECT 'history-' || i, 'bench_history', 'v1', 'completed', '{{}}', '{{}}', 0,
               {start} + i, {start} + i, {start} + i + 1 FROM n;
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {executions}),
                       m(j) AS (SELECT 1 UNION ALL SELECT j + 1 FROM m WHERE j < {HISTORY_TASKS})
        INSERT INTO cloaca_task_executions (execution_id, task_id, workflow_name, workflow_version, status,
                                            deps_remaining, attempt, max_attempts, next_attempt_at, output_context,
                                            started_at, finished_at)
        SELECT 'history-' || i, 't' || j, 'bench_history', 'v1', 'completed', 0, 1, 1,
               {start} + i, '{{}}', {start} + i, {start} + i + 1 FROM n, m;
    """


def load_history(cloaca, url: str, task_rows: int, psql: str | None) -> dict:
    """Create the schema (a runner opened and shut down), then insert the history with SQL in one transaction."""
    with cloaca.DefaultRunner(url):
        pass
    executions = max(1, task_rows // HISTORY_TASKS)
    sql = history_sql(executions, int(time.time() * 1000))
    started = time.perf_counter()
    if url.startswith("sqlite:"):
        # No runner is open on the file: the sqlite3 module's own SQLite library may write it.
        connection = sqlite3.connect(urlsplit(url).path)
        try:
            connection.executescript("BEGIN;" + sql + "COMMIT;")
        finally:
            connection.close()
    else:
        # One -c string is one transaction. ANALYZE does at once what autovacuum
        # would do within a minute of such a load, so the figures do not depend on when.
        plain = url.split("?", 1)[0]
        for command in (sql, "ANALYZE"):
            subprocess.run([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", plain, "-c", command], check=True)
    seconds = time.perf_counter() - started
    return {"executions": executions, "task_rows": executions * HISTORY_TASKS, "load_s": seconds}


def list_ms(runner, **filters) -> float:
    """Median ms of one list_executions call with `filters`, after as many untimed calls."""
    samples = []
    for i in range(2 * LIST_CALLS):
        started = time.perf_counter()
        runner.list_executions(**filters, limit=100)
        if i >= LIST_CALLS:
            samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def measure_database(cloaca, url: str, length: int, width: int) -> dict:
    """W1, W2 and the two filtered listings on one database, in one runner."""
    with cloaca.DefaultRunner(url) as runner:
        w1 = timed_execute(runner, "bench_h_w1") * 1000 / length
        w2 = (width + 1) / timed_execute(runner, "bench_h_w2")
        return {
            "w1_ms_per_task": w1,
            "w2_tasks_per_s": w2,
            "list_by_workflow_ms": list_ms(runner, workflow_name="bench_h_w1"),
            "list_by_status_ms": list_ms(runner, status="Failed"),
        }


def prune_history(cloaca, url: str) -> dict:
    """Delete the whole loaded history (and the bench's executions) with prune_executions, timed."""
    with cloaca.DefaultRunner(url) as runner:
        started = time.perf_counter()
        deleted = runner.prune_executions("2999-01-01T00:00:00Z")
        return {"pruned_executions": deleted, "prune_s": time.perf_counter() - started}


def run_history(
    cloaca, urls: list[str], history_urls: list[str], task_rows: int, length: int, width: int, psql
) -> dict:
    """Per run: the empty database, then the loaded one, then pruning it; medians over the runs."""
    define_chain(cloaca, "bench_h_w1", length)
    define_fanout(cloaca, "bench_h_w2", width)
    empty, loaded, loads, prunes = [], [], [], []
    for url, history_url in zip(urls, history_urls):
        empty.append(measure_database(cloaca, url, length, width))
        loads.append(load_history(cloaca, history_url, task_rows, psql))
        loaded.append(measure_database(cloaca, history_url, length, width))
        prunes.append(prune_history(cloaca, history_url))
    keys = empty[0].keys()
    result = {
        "workload": "history",
        "runs": len(urls),
        "task_rows": loads[0]["task_rows"],
        "empty": {k: statistics.median(r[k] for r in empty) for k in keys},
        "loaded": {k: statistics.median(r[k] for r in loaded) for k in keys},
        "per_run": {"empty": empty, "loaded": loaded, "loads": loads, "prunes": prunes},
    }
    rows = [load["task_rows"] + load["executions"] for load in loads]
    result["load_rows_per_s"] = statistics.median(r / load["load_s"] for r, load in zip(rows, loads))
    # Rows deleted per second: executions and their task rows.
    result["prune_rows_per_s"] = statistics.median(r / p["prune_s"] for r, p in zip(rows, prunes))
    return result


def rss_bytes() -> int:
    """This process's resident set size now (VmRSS of /proc/self/status), in bytes."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS line in /proc/self/status")


def psql_rows(psql: str, url: str, sql: str) -> list[list[str]]:
    """The rows of one query through psql (unaligned, tuples only), as lists of strings."""
    plain = url.split("?", 1)[0]
    done = subprocess.run(
        [psql, "-X", "-q", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-d", plain, "-c", sql],
        check=True,
        capture_output=True,
        text=True,
    )
    return [line.split("\t") for line in done.stdout.splitlines() if line]


#: The tables of this database's cloaca schema with their total size (indexes and TOAST included).
PG_TABLE_SIZES = """
    SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind = 'r' AND n.nspname = current_schema() AND c.relname LIKE 'cloaca%'
"""


def stored_sizes(url: str, psql: str | None, compact: bool = False) -> dict:
    """What a database holds on disk, no runner open on it: total bytes, bytes per table, rows.

    SQLite: the WAL is checkpointed into the file (TRUNCATE) first; total is the
    file plus its -wal, per table from dbstat (the table's pages and its indexes').
    PostgreSQL: the sum of pg_total_relation_size of the schema's cloaca tables.
    `compact` first rebuilds the database (SQLite VACUUM, PostgreSQL VACUUM FULL),
    which drops free pages and dead row versions and packs the indexes.
    """
    if url.startswith("sqlite:"):
        path = urlsplit(url).path
        connection = sqlite3.connect(path, isolation_level=None)
        try:
            if compact:
                connection.execute("VACUUM")
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            tables = dict(
                connection.execute(
                    "SELECT m.tbl_name, SUM(d.pgsize) FROM dbstat d JOIN sqlite_master m ON m.name = d.name "
                    "WHERE m.tbl_name LIKE 'cloaca%' GROUP BY m.tbl_name"
                ).fetchall()
            )
            tasks = connection.execute("SELECT count(*) FROM cloaca_task_executions").fetchone()[0]
            executions = connection.execute("SELECT count(*) FROM cloaca_executions").fetchone()[0]
        finally:
            connection.close()
        total = sum(os.path.getsize(f) for f in (path, path + "-wal") if os.path.exists(f))
    else:
        if compact:
            psql_rows(psql, url, "VACUUM FULL")
        tables = {name: int(size) for name, size in psql_rows(psql, url, PG_TABLE_SIZES)}
        counts = "SELECT (SELECT count(*) FROM cloaca_task_executions), (SELECT count(*) FROM cloaca_executions)"
        tasks, executions = psql_rows(psql, url, counts)[0]
        total = sum(tables.values())
    return {"bytes": int(total), "tables": tables, "task_rows": int(tasks), "executions": int(executions)}


def measure_disk(cloaca, url: str, stored: int, length: int, psql: str | None) -> dict:
    """Bytes on disk per stored task and per completed execution of a `length`-task chain, on one database.

    The schema alone is measured first (a runner opened and shut down), then
    enough chains run to store `stored` task rows (submitted at once, so the
    workers run them side by side), then the database is measured again with no
    runner open. The figures are the growth over the schema alone.
    """
    with cloaca.DefaultRunner(url):
        pass
    empty = stored_sizes(url, psql)
    executions = max(1, math.ceil(stored / length))
    with cloaca.DefaultRunner(url) as runner:
        handles = [runner.execute_async("bench_memory_chain", {}) for _ in range(executions)]
        for handle in handles:
            require_completed(handle.wait(), "a memory chain execution")
    found = stored_sizes(url, psql)
    compacted = stored_sizes(url, psql, compact=True)
    if found["task_rows"] != executions * length or found["executions"] != executions:
        print(f"bench: expected {executions} executions of {length} tasks stored, found {found}", file=sys.stderr)
        raise SystemExit(1)
    grown = found["bytes"] - empty["bytes"]
    return {
        "executions": executions,
        "task_rows": found["task_rows"],
        "empty_bytes": empty["bytes"],
        "stored_bytes": found["bytes"],
        "compacted_bytes": compacted["bytes"],
        "tables_bytes": found["tables"],
        "bytes_per_stored_task": grown / found["task_rows"],
        "bytes_per_completed_execution": grown / executions,
        "compacted_bytes_per_stored_task": (compacted["bytes"] - empty["bytes"]) / found["task_rows"],
    }


#: Held by every task of the memory child's workflow until the measurement is taken.
RELEASE = threading.Event()
#: Tasks of the memory child's workflow that started (held the workers) before the measurement.
STARTED = []


def held_task(ctx):
    """The memory child's only task: hold a worker until RELEASE is set."""
    STARTED.append(1)
    RELEASE.wait()


def memory_child(url: str, queued: int) -> None:
    """The queued-executions measurement, in a process of its own: print its JSON line.

    Every worker is held by a task that waits for RELEASE, so the executions
    submitted after them stay queued (stored, ready, not claimed). RSS is read
    after a warm-up execution (threads started, statements prepared) and after
    `queued` submissions whose handles are all still held.
    """
    import cloaca

    define_single(cloaca, "bench_memory_warmup")
    with cloaca.WorkflowBuilder("bench_memory_held") as builder:
        builder.description("bench: one task that holds its worker")
        cloaca.task(id="held")(held_task)
    config = cloaca.DefaultRunnerConfig.default()
    with cloaca.DefaultRunner(url) as runner:
        require_completed(runner.execute("bench_memory_warmup", {}), "the memory warm-up execution")
        try:
            blockers = [runner.execute_async("bench_memory_held", {}) for _ in range(config.max_concurrent_tasks)]
            deadline = time.monotonic() + 60
            while len(STARTED) < config.max_concurrent_tasks and time.monotonic() < deadline:
                time.sleep(0.01)
            gc.collect()
            before = rss_bytes()
            handles = [runner.execute_async("bench_memory_held", {}) for _ in range(queued)]
            gc.collect()
            after = rss_bytes()
            started = len(STARTED)
        finally:
            # Without it, shutting the runner down would wait for the held tasks forever.
            # The queued executions are left in the database: the workers stop after
            # the tasks they run end, and the database is thrown away with the run.
            RELEASE.set()
        for handle in blockers:
            require_completed(handle.wait(), "a memory blocker execution")
    print(
        json.dumps(
            {
                "rss_before_bytes": before,
                "rss_after_bytes": after,
                "queued": queued,
                "handles_held": len(handles),
                "workers": config.max_concurrent_tasks,
                "running_while_measured": started,
                "rss_bytes_per_queued_execution": (after - before) / queued,
            }
        ),
        flush=True,
    )


def queued_rss(url: str, queued: int) -> dict:
    """Run the memory child on `url`; its JSON result."""
    command = [sys.executable, __file__, "memory-child", "--url", url, "--queued", str(queued)]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False, timeout=MEMORY_CHILD_TIMEOUT_S)
    if done.returncode != 0:
        print(f"bench: the memory child on {url} failed (exit {done.returncode}); its error is above.", file=sys.stderr)
        raise SystemExit(1)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_memory(cloaca, urls: list[str], queued: int, stored: int, length: int, psql: str | None) -> dict:
    """Per run: disk per stored task on the fresh database, then RSS per queued execution; medians."""
    define_chain(cloaca, "bench_memory_chain", length)
    disks, rss = [], []
    for url in urls:
        disks.append(measure_disk(cloaca, url, stored, length, psql))
        rss.append(queued_rss(url, queued))
    return {
        "workload": "memory",
        "runs": len(urls),
        "queued": queued,
        "chain": length,
        "task_rows": disks[0]["task_rows"],
        "executions": disks[0]["executions"],
        "rss_bytes_per_queued_execution": statistics.median(r["rss_bytes_per_queued_execution"] for r in rss),
        "bytes_per_stored_task": statistics.median(d["bytes_per_stored_task"] for d in disks),
        "bytes_per_completed_execution": statistics.median(d["bytes_per_completed_execution"] for d in disks),
        "compacted_bytes_per_stored_task": statistics.median(d["compacted_bytes_per_stored_task"] for d in disks),
        "counted": {
            "rss": "growth of the process's VmRSS over the submission of the queued executions, divided by "
            "their number, in a fresh process after a warm-up execution, with every worker held busy: the "
            "engine's memory for them, the caller's ExecutionHandle objects (all still held), and the database "
            "client's caches (SQLite page cache, PostgreSQL connection buffers)",
            "disk": "growth of the database over its empty schema once the chains completed and the runner "
            "shut down: SQLite file + -wal after PRAGMA wal_checkpoint(TRUNCATE); PostgreSQL "
            "pg_total_relation_size of the cloaca tables (indexes and TOAST included, dead row versions of "
            "the updates not vacuumed); per stored task over every task row, per completed execution over "
            "the executions of the chain (each holding its tasks); compacted: the same after SQLite VACUUM "
            "or PostgreSQL VACUUM FULL",
        },
        "per_run": {"disk": disks, "rss": rss},
    }


def run_cold(urls: list[str]) -> dict:
    """Fresh processes: spawn -> first result, ms, median over the runs."""
    times_ms = [cold_process_ms(url) for url in urls]
    return {"workload": "cold", "runs": len(urls), "ms": statistics.median(times_ms), "per_run_ms": times_ms}


def cold_process_ms(url: str) -> float:
    """Start this script as a cold child on `url`; ms until it reports its first result.

    The clock stops at the child's ready line, so the child's shutdown and
    interpreter exit are not counted: they are not on the path to a result.
    """
    command = [sys.executable, __file__, "cold-child", "--url", url]
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline().strip()
        elapsed_ms = (time.perf_counter() - started) * 1000
        child.stdout.read()
        status = child.wait(timeout=COLD_CHILD_TIMEOUT_S)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    if line != COLD_READY_LINE or status != 0:
        print(
            f"bench: a cold process on {url} failed (exit {status}, said {line!r}); its error is above.",
            file=sys.stderr,
        )
        raise SystemExit(1)
    return elapsed_ms


def cold_child(url: str) -> None:
    """The measured process: import, define, open a runner, run one task, report."""
    import cloaca  # the import is part of what `cold` measures

    define_single(cloaca, "bench_cold")
    with cloaca.DefaultRunner(url) as runner:
        result = runner.execute("bench_cold", {})
        require_completed(result, "the cold workflow")
        print(COLD_READY_LINE, flush=True)


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description="cloaca engine workloads (see docs/benchmarks.md)")
    parser.add_argument(
        "workload", choices=["w3", "w1", "w2", "w4", "cold", "cold-child", "history", "memory", "memory-child"]
    )
    parser.add_argument(
        "--url", action="append", required=True, help="a fresh database for one run; repeat once per run"
    )
    parser.add_argument("--calls", type=int, default=200, help="W3: timed calls per run")
    parser.add_argument("--warmup", type=int, default=20, help="W3: untimed calls per run first")
    parser.add_argument("--chain", type=int, default=100, help="W1: tasks in the chain")
    parser.add_argument("--fanout", type=int, default=200, help="W2: tasks before the join")
    parser.add_argument("--executions", type=int, default=1000, help="W4: 1-task executions submitted at once")
    parser.add_argument("--history", type=int, default=1_000_000, help="history: completed task rows to load")
    parser.add_argument(
        "--history-url", action="append", default=[], help="history: a fresh database to load, one per --url"
    )
    parser.add_argument("--psql", help="history and memory on postgres: the psql that loads or measures")
    parser.add_argument("--queued", type=int, default=10_000, help="memory: 1-task executions held queued")
    parser.add_argument("--stored", type=int, default=10_000, help="memory: task rows to store (chains of --chain)")
    args = parser.parse_args(argv)
    if args.workload == "history" and len(args.history_url) != len(args.url):
        parser.error("history needs one --history-url per --url")
    if args.workload == "memory" and not args.url[0].startswith("sqlite:") and not args.psql:
        parser.error("memory on postgres needs --psql")
    for name in ("calls", "chain", "fanout", "executions", "queued", "stored"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must not be negative")
    return args


def main(argv: list[str]) -> None:
    """Run one workload and print its JSON result on stdout."""
    args = parse_arguments(argv)
    if args.workload == "cold-child":
        cold_child(args.url[0])
        return
    if args.workload == "memory-child":
        memory_child(args.url[0], args.queued)
        return
    if args.workload == "cold":
        result = run_cold(args.url)
    else:
        import cloaca

        if args.workload == "w3":
            result = run_w3(cloaca, args.url, args.calls, args.warmup)
        elif args.workload == "w1":
            result = run_w1(cloaca, args.url, args.chain)
        elif args.workload == "w4":
            result = run_w4(cloaca, args.url, args.executions)
        elif args.workload == "history":
            result = run_history(cloaca, args.url, args.history_url, args.history, args.chain, args.fanout, args.psql)
        elif args.workload == "memory":
            result = run_memory(cloaca, args.url, args.queued, args.stored, args.chain, args.psql)
        else:
            result = run_w2(cloaca, args.url, args.fanout)
        result["backend"] = cloaca.get_backend()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
