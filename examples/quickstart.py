"""cloaca quickstart: a small ETL workflow, run durably on SQLite (or on the database URL given).

    extract ─┬─> transform_p0 ─┐
             ├─> transform_p1 ─┤
             ├─> transform_p2 ─┼─> load ─> summary
             └─> transform_p3 ─┘

- extract makes some order rows;
- one transform task per partition totals its rows (they run in parallel);
- transform_p2 fails transiently on its first attempt (a simulated dropped
  connection) and succeeds on the retry its retry policy allows;
- load joins the partitions and writes them to a "warehouse" file;
- summary describes what was loaded.

Every task state change is stored in the SQLite database before the next step
starts, so a run interrupted by a crash is finished by the next runner opened
on the same file (see docs/execution-model.md).

usage: python examples/quickstart.py [DATABASE_FILE | DATABASE_URL]
(default: a database in a temporary directory). An argument with "://" in it is
a database URL, e.g. postgresql://user:pass@host/db, used as given (on a
postgres install of cloaca, run it with one). `angreal cloaca demo` builds
the sqlite backend and runs this in its virtualenv.
"""

import json
import os
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

import cloaca

WORKFLOW = "etl_quickstart"
PARTITIONS = 4
FLAKY_PARTITION = 2
ROWS = 24

# Attempts per task in THIS process. Tasks run on the runner's worker threads
# in this process, so a module-level counter sees every attempt of a run
# (a runner in another process would start counting afresh, and that is fine:
# the flaky task would simply fail once more and be retried there too).
_attempts: Counter[str] = Counter()
_attempts_lock = threading.Lock()


def next_attempt(task_id: str) -> int:
    """Count one more attempt of `task_id` and return its number (1-based)."""
    with _attempts_lock:
        _attempts[task_id] += 1
        return _attempts[task_id]


def say(line: str) -> None:
    """Print a whole line at once: tasks finish on several worker threads, and
    print() writes the text and the newline separately."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def define_workflow() -> None:
    """Register the ETL workflow (leaving the `with` block builds, validates and registers it)."""
    with cloaca.WorkflowBuilder(WORKFLOW) as builder:
        builder.description("quickstart: extract, transform per partition, load, summarise")
        builder.tag("example", "quickstart")

        @cloaca.task(id="extract")
        def extract(ctx: cloaca.Context) -> cloaca.Context:
            regions = ["north", "south", "east", "west"]
            rows = [{"id": i, "region": regions[i % len(regions)], "amount": 10 + (i * 7) % 23} for i in range(ROWS)]
            ctx.set("rows", rows)
            say(f"[task] extract done: {len(rows)} rows")
            return ctx

        transform_ids = [define_transform(p) for p in range(PARTITIONS)]

        @cloaca.task(id="load", dependencies=transform_ids)
        def load(ctx: cloaca.Context) -> cloaca.Context:
            # The input is the merge of every transform's output: one key per partition.
            parts = [ctx[f"partition_{p}"] for p in range(PARTITIONS)]
            loaded = {"rows": sum(p["rows"] for p in parts), "total": sum(p["total"] for p in parts)}
            write_warehouse(Path(ctx["workdir"]) / "warehouse.json", parts)
            ctx.set("loaded", loaded)
            say(f"[task] load done: {loaded['rows']} rows, total {loaded['total']}")
            return ctx

        @cloaca.task(id="summary", dependencies=["load"])
        def summary(ctx: cloaca.Context) -> None:
            loaded = ctx["loaded"]
            ctx.set(
                "summary", f"loaded {loaded['rows']} rows from {PARTITIONS} partitions, total amount {loaded['total']}"
            )
            say(f"[task] summary done: {ctx['summary']}")
            # Returning None keeps the context as mutated.


def define_transform(partition: int) -> str:
    """Register the transform task of one partition (inside the builder's block); its id."""
    task_id = f"transform_p{partition}"
    flaky = partition == FLAKY_PARTITION

    # retry_condition="transient_only" retries ConnectionError/TimeoutError/OSError
    # but not a bug such as a KeyError; the short fixed delay keeps the demo quick.
    @cloaca.task(
        id=task_id,
        dependencies=["extract"],
        retry_attempts=2 if flaky else 0,
        retry_backoff="fixed",
        retry_delay_ms=200,
        retry_condition="transient_only",
    )
    def transform(ctx: cloaca.Context) -> cloaca.Context:
        attempt = next_attempt(task_id)
        if flaky and attempt == 1:
            say(f"[task] {task_id} attempt 1 failed: ConnectionError (simulated); the engine will retry it")
            raise ConnectionError("warehouse connection reset (simulated, first attempt only)")
        rows = [r for r in ctx["rows"] if r["id"] % PARTITIONS == partition]
        ctx.set(f"partition_{partition}", {"rows": len(rows), "total": sum(r["amount"] for r in rows)})
        # Dependents only need the partition's totals, not every row again.
        ctx.remove("rows")
        say(f"[task] {task_id} done: {len(rows)} rows (attempt {attempt})")
        return ctx

    return task_id


def write_warehouse(path: Path, parts: list[dict[str, int]]) -> None:
    """Write the loaded partitions in one atomic step.

    A task may run more than once (at-least-once delivery), so its side
    effects must be idempotent: replacing the whole file is; appending is not.
    """
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(parts, indent=2))
    os.replace(tmp, path)


def run(url: str, workdir: Path) -> int:
    """Run the workflow on the database at `url`, loading into `workdir`; 0 if it completed, 1 if not."""
    define_workflow()
    say(f"cloaca {cloaca.__version__}, backend: {cloaca.get_backend()}, database: {url}")
    with cloaca.DefaultRunner(url) as runner:
        result = runner.execute(WORKFLOW, {"workdir": str(workdir)})
    say("final context:")
    say(json.dumps(result.final_context.to_dict(), indent=2, sort_keys=True))
    say(f"status: {result.status}")
    if result.status != "Completed":
        print(f"error: {result.error_message}", file=sys.stderr, flush=True)
        return 1
    return 0


def main(argv: list[str]) -> int:
    """Use the database file or URL given, or a file in a temporary directory removed afterwards."""
    if len(argv) > 1 and "://" not in argv[1]:
        database = Path(argv[1]).resolve()
        return run(f"sqlite://{database}", database.parent)
    with tempfile.TemporaryDirectory(prefix="cloaca-quickstart-") as tmp:
        url = argv[1] if len(argv) > 1 else f"sqlite://{Path(tmp) / 'quickstart.db'}"
        return run(url, Path(tmp))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
