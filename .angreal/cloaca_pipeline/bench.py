"""`bench`: the engine workloads on release builds, as one table beside their targets.

Per backend: provide the database as `test` does (databases.py: a temporary
directory for sqlite, the throw-away cluster or CLOACA_TEST_POSTGRES_URL for
postgres), build the release wheel (build.py), install it into its own
virtualenv `.venvs/<backend>-bench` (venvs.py), then run each workload in that
virtualenv with bench_workloads.py, every run on a fresh database. SQLite is
measured twice: `_synchronous=NORMAL` (WAL, the default) and `FULL`.

Release wheels go to cloaca-backend/target/wheels/release (build.wheel_dir),
apart from the debug wheels `test` installs, so bench and test never rebuild
or reinstall each other's builds.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from cloaca_pipeline import build, databases, project, suites, venvs
from cloaca_pipeline.errors import ChecksFailed, PipelineError, print_paragraph

#: The script that runs inside the bench virtualenv and prints JSON results.
WORKLOADS_SCRIPT = Path(__file__).resolve().with_name("bench_workloads.py")
#: The peers' workload scripts (<peer>_workloads.py), which print the same JSON.
PEER_SCRIPTS_DIR = Path(__file__).resolve().with_name("bench_peers")
DEFAULT_RUNS = 5
#: How long one workload (all its runs) may take before it counts as hung.
WORKLOAD_TIMEOUT_S = 1800


@dataclass(frozen=True)
class Row:
    """One line of the table: a figure a workload produces, and its budget."""

    key: str  # the figure's name in measurements
    label: str
    unit: str  # "ms" (lower is better), "tasks/s" or "executions/s" (higher is better)
    target_sqlite: float | None
    target_postgres: float | None

    @property
    def higher_is_better(self) -> bool:
        """Throughputs must reach their target; latencies must stay under it."""
        return self.unit.endswith("/s")


#: The performance targets: the ONLY copy of the numbers (docs/benchmarks.md
#: says what they promise and shows them in its tables). Change them here.
ROWS = (
    Row("w3_p50_ms", "W3: 1-task workflow, call→result p50", "ms", 0.5, 2.0),
    Row("w3_p95_ms", "W3: 1-task workflow, call→result p95", "ms", None, None),
    Row("w1_ms_per_task", "W1: chain of 100 tasks, per task", "ms", 0.25, 1.0),
    Row("w2_tasks_per_s", "W2: fan-out of 200 tasks + join", "tasks/s", 4000, 1500),
    Row("cold_ms", "cold: new process → import → first result", "ms", 100, 150),
    Row("w4_executions_per_s", "W4: 1,000 1-task executions submitted at once", "executions/s", None, None),
)


@dataclass(frozen=True)
class Column:
    """One measured configuration: a backend and the URL options it runs with.

    A peer's column (bench --peers) names the peer; its workloads run with that
    peer's script in that peer's virtualenv, on the backend's kind of database.
    """

    label: str
    backend: str
    query: str  # appended to every fresh database URL
    peer: str | None = None

    @property
    def script(self) -> Path:
        """The workloads script this column runs."""
        return WORKLOADS_SCRIPT if self.peer is None else PEER_SCRIPTS_DIR / f"{self.peer}_workloads.py"


COLUMNS = (
    Column("sqlite NORMAL", "sqlite", "?_journal_mode=WAL&_synchronous=NORMAL"),
    Column("sqlite FULL", "sqlite", "?_journal_mode=WAL&_synchronous=FULL"),
    Column("postgres", "postgres", ""),
)
#: The columns the targets apply to: SQLite at NORMAL, its default; FULL (an
#: fsync per commit) is reported beside it for comparison, with no target.
TARGETED_COLUMNS = ("sqlite NORMAL", "postgres")


@dataclass(frozen=True)
class Sizes:
    """Workload sizes. The chain length and fan-out width are what the W1 and W2 targets are
    set for; the call counts only decide how many samples W3 takes."""

    calls: int = 200  # W3 timed calls per run
    warmup: int = 20  # W3 untimed calls per run first
    chain: int = 100
    fanout: int = 200
    executions: int = 1000  # W4
    queued: int = 10_000  # memory: 1-task executions held queued
    stored: int = 10_000  # memory: task rows stored, as chains of `chain` tasks


# ---------------------------------------------------------------- input ---


def validate_runs(runs: str | None) -> int:
    """--runs as a positive int (DEFAULT_RUNS when not given), else a bad-input error."""
    if runs is None:
        return DEFAULT_RUNS
    text = str(runs).strip()
    if not re.fullmatch(r"\d+", text) or int(text) < 1:
        raise PipelineError(
            f"--runs {runs!r} is not accepted: give the number of runs per workload as a whole "
            f"number of at least 1 (default {DEFAULT_RUNS}); each run uses a fresh database."
        )
    return int(text)


def validate_history(history: str | None) -> int | None:
    """--history as a number of task rows of at least 100 (one execution), or None when not given."""
    if history is None:
        return None
    text = str(history).strip().replace("_", "")
    if not re.fullmatch(r"\d+", text) or int(text) < 100:
        raise PipelineError(
            f"--history {history!r} is not accepted: give the number of completed task rows to load "
            "as a whole number of at least 100, e.g. --history 1000000."
        )
    return int(text)


def validate_output(output: str | None) -> Path | None:
    """--output as a writable file path, checked before anything is built."""
    if output is None:
        return None
    path = Path(output).expanduser().resolve()
    if path.is_dir():
        raise PipelineError(f"--output {output!r} is a directory; give a file name, e.g. --output bench.md.")
    if not path.parent.is_dir():
        raise PipelineError(
            f"--output {output!r}: the directory {path.parent} does not exist; create it or write somewhere else."
        )
    return path


def columns_of(backend: str) -> list[Column]:
    """The columns measured with `backend`'s build."""
    return [c for c in COLUMNS if c.backend == backend]


def bench_venv_name(backend: str) -> str:
    """The virtualenv the release build goes into (the test virtualenvs keep their debug build)."""
    return f"{backend}-bench"


# ------------------------------------------------------------ databases ---


def find_psql() -> str:
    """psql from PATH, else beside the server binaries the test harness uses."""
    found = shutil.which("psql")
    if found:
        return found
    with contextlib.suppress(databases.NoPostgresServer):
        beside_server = databases.find_postgres_bin_dir() / "psql"
        if beside_server.exists():
            return str(beside_server)
    raise PipelineError(
        "psql was found neither on PATH nor beside the PostgreSQL server binaries; bench needs "
        "it to give every postgres run a fresh database. Install the PostgreSQL client "
        "(Debian: apt-get install postgresql-client)."
    )


class FreshDatabases:
    """Hands out a new, empty database URL per run, next to the database `test` would use.

    sqlite: new files in the directory of the harness's temporary database.
    postgres: new databases on the harness's server, dropped by `drop_all`.
    """

    def __init__(self, backend: str, base_url: str):
        self.backend = backend
        self.base_url = base_url
        self.created: list[str] = []
        self.count = 0
        if backend == "postgres":
            self.psql = find_psql()

    def new_url(self, tag: str, query: str = "") -> str:
        """A URL of a database nobody has used yet; `tag` goes into its name."""
        self.count += 1
        name = f"bench_{os.getpid()}_{self.count}_{re.sub(r'[^a-z0-9]+', '_', tag.lower())}"
        if self.backend == "sqlite":
            directory = Path("/" + self.base_url.removeprefix("sqlite://").split("?", 1)[0].lstrip("/")).parent
            return f"sqlite://{directory / (name + '.db')}{query}"
        self.run_sql(self.base_url, f'CREATE DATABASE "{name}"')
        self.created.append(name)
        parts = urlsplit(self.base_url)
        return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment)) + query

    def run_sql(self, url: str, sql: str) -> None:
        """One SQL command through psql; a failure is reported as bad input (the server)."""
        done = subprocess.run(
            [self.psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if done.returncode != 0:
            raise PipelineError(
                f"psql could not run {sql!r} on {url}: {done.stderr.strip()}. "
                "bench needs a server where it may create databases."
            )

    def drop_all(self) -> None:
        """Drop the databases made for the runs (a given server keeps nothing of ours)."""
        for name in self.created:
            with contextlib.suppress(PipelineError, subprocess.TimeoutExpired):
                self.run_sql(self.base_url, f'DROP DATABASE IF EXISTS "{name}"')
        self.created.clear()


# -------------------------------------------------------------- running ---


def run_workload(python: Path, workload: str, urls: list[str], sizes: Sizes, script: Path = WORKLOADS_SCRIPT) -> dict:
    """Run one workload's runs (one URL each) with `script` in `python`; its JSON result."""
    command = [
        str(python),
        str(script),
        workload,
        "--calls",
        str(sizes.calls),
        "--warmup",
        str(sizes.warmup),
        "--chain",
        str(sizes.chain),
        "--fanout",
        str(sizes.fanout),
        "--executions",
        str(sizes.executions),
    ]
    for url in urls:
        command += ["--url", url]
    return run_script(command, workload, python, script)


def run_script(
    command: list[str], workload: str, python: Path, script: Path, timeout: int = WORKLOAD_TIMEOUT_S
) -> dict:
    """Run a workloads script's command line; the JSON of its last stdout line.

    Its stderr is not captured: a failing run's own message reaches the user as is.
    """
    try:
        done = subprocess.run(
            command,
            cwd=project.ROOT,
            env=suites.test_environment(),
            stdout=subprocess.PIPE,
            text=True,
            check=False,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise ChecksFailed(
            f"workload {workload} did not finish within {timeout} s; "
            "the engine may hang (run the workloads script by hand to see)."
        ) from exc
    if done.returncode != 0:
        raise ChecksFailed(
            f"workload {workload} failed (exit status {done.returncode}; its "
            f"message is above). To repeat it by hand: {project.relative(python)} "
            f"{project.relative(script)} {workload} --url URL"
        )
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError) as exc:
        raise ChecksFailed(f"workload {workload} printed no JSON result; its stdout was {done.stdout!r}") from exc


#: workload -> (figure in its JSON, row key).
FIGURES = {
    "w3": (("p50_ms", "w3_p50_ms"), ("p95_ms", "w3_p95_ms")),
    "w1": (("ms_per_task", "w1_ms_per_task"),),
    "w2": (("tasks_per_s", "w2_tasks_per_s"),),
    "cold": (("ms", "cold_ms"),),
    "w4": (("executions_per_s", "w4_executions_per_s"),),
}


def measure_column(
    python: Path, column: Column, fresh: FreshDatabases, runs: int, sizes: Sizes = Sizes()
) -> dict[str, float]:
    """Every workload of one column, each run on a fresh database; row key -> figure.

    A peer's column also keeps the durability its script read from its database
    (under "durability"), for the report to state.
    """
    figures = {}
    for workload, wanted in FIGURES.items():
        print(f"bench: {column.label}: {workload}, {runs} run(s)", flush=True)
        urls = [fresh.new_url(f"{column.label}-{workload}-{i}", column.query) for i in range(runs)]
        result = run_workload(python, workload, urls, sizes, column.script)
        for field, key in wanted:
            figures[key] = float(result[field])
        if "durability" in result:
            figures["durability"] = result["durability"]
    return figures


def measure_history(
    python: Path, column: Column, fresh: FreshDatabases, runs: int, task_rows: int, sizes: Sizes = Sizes()
) -> dict:
    """The history workload of one column: per run an empty and a loaded database; its JSON result."""
    print(f"bench: {column.label}: history of {task_rows:,} task rows, {runs} run(s)", flush=True)
    command = [
        str(python),
        str(WORKLOADS_SCRIPT),
        "history",
        "--history",
        str(task_rows),
        "--chain",
        str(sizes.chain),
        "--fanout",
        str(sizes.fanout),
    ]
    for i in range(runs):
        command += ["--url", fresh.new_url(f"{column.label}-history-empty-{i}", column.query)]
        command += ["--history-url", fresh.new_url(f"{column.label}-history-loaded-{i}", column.query)]
    if column.backend == "postgres":
        command += ["--psql", fresh.psql]
    return run_script(command, "history", python, WORKLOADS_SCRIPT, timeout=WORKLOAD_TIMEOUT_S * 2)


def measure_memory(python: Path, column: Column, fresh: FreshDatabases, runs: int, sizes: Sizes = Sizes()) -> dict:
    """The memory workload of one column: per run, disk per stored task and RSS per queued execution; its JSON."""
    print(
        f"bench: {column.label}: memory, {sizes.queued:,} queued executions and {sizes.stored:,} stored "
        f"task rows, {runs} run(s)",
        flush=True,
    )
    command = [
        str(python),
        str(WORKLOADS_SCRIPT),
        "memory",
        "--queued",
        str(sizes.queued),
        "--stored",
        str(sizes.stored),
        "--chain",
        str(sizes.chain),
    ]
    for i in range(runs):
        command += ["--url", fresh.new_url(f"{column.label}-memory-{i}", column.query)]
    if column.backend == "postgres":
        command += ["--psql", fresh.psql]
    return run_script(command, "memory", python, WORKLOADS_SCRIPT)


#: Page writes timed, each followed by an fsync, to state the disk's flush latency beside the FULL figures.
FSYNC_SAMPLES = 200
#: What a chain task at FULL may cost beyond NORMAL, in write+fsync latencies of the disk it runs on.
FSYNC_BUDGET = 2


def fsync_latency_ms(directory: Path, samples: int = FSYNC_SAMPLES) -> float:
    """The median time to write one 4 KiB page into a file in `directory` and fsync it, in ms.

    A durable commit cannot cost less on that disk: it is the floor the
    sqlite FULL figures are read against.
    """
    probe = directory / "cloaca-bench-fsync.probe"
    page = b"\0" * 4096
    times = []
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for i in range(samples):
            started = time.perf_counter()
            os.pwrite(fd, page, (i % 16) * len(page))
            os.fsync(fd)
            times.append((time.perf_counter() - started) * 1000)
    finally:
        os.close(fd)
        probe.unlink(missing_ok=True)
    return statistics.median(times)


def fsync_note(measured: dict[str, dict | str]) -> str | None:
    """How the chain at sqlite FULL compares with NORMAL, in fsync latencies of this run's disk."""
    normal, full = measured.get("sqlite NORMAL"), measured.get("sqlite FULL")
    if not (isinstance(normal, dict) and isinstance(full, dict) and "fsync_ms" in full):
        return None
    extra = full["w1_ms_per_task"] - normal["w1_ms_per_task"]
    fsync = full["fsync_ms"]
    within = "within" if extra <= FSYNC_BUDGET * fsync else "over"
    return (
        f"sqlite FULL: a chain task costs {extra:.3f} ms more than at NORMAL, {extra / fsync:.1f} "
        f"write+fsync latencies of this disk (median {fsync:.3f} ms over {FSYNC_SAMPLES} page writes, "
        f"measured in this run); {within} the budget of {FSYNC_BUDGET}."
    )


def bench_backend(
    backend: str,
    runs: int,
    sizes: Sizes = Sizes(),
    history: int | None = None,
    peer_columns: tuple[tuple[Column, Path], ...] = (),
    memory: bool = False,
) -> dict[str, dict | str]:
    """Database, release build, bench virtualenv, workloads: column label -> figures.

    `peer_columns` (column, the peer's interpreter) are measured after ours, on
    fresh databases of the same server or directory.
    A postgres backend without server binaries is skipped with a warning (its
    columns say why), except in CI, where that is an error, as in `test`.
    """
    with contextlib.ExitStack() as cleanup:
        try:
            base_url = cleanup.enter_context(databases.provide_database(backend, durable=True))
        except databases.NoPostgresServer as exc:
            if suites.running_in_ci():
                raise
            print_paragraph(f"SKIPPING the {backend} backend: {exc}", prefix="cloaca: WARNING: ")
            return {c.label: "skipped: no server" for c in [*columns_of(backend), *(p for p, _ in peer_columns)]}
        built = build.build_backend_wheel(backend, release=True)
        venv = bench_venv_name(backend)
        venvs.ensure_backend_venv(venv, built.wheel)
        fresh = FreshDatabases(backend, base_url)
        cleanup.callback(fresh.drop_all)
        python = project.venv_python(venv)
        measured = {}
        for column in columns_of(backend):
            measured[column.label] = measure_column(python, column, fresh, runs, sizes)
            if history is not None:
                measured[column.label]["history"] = measure_history(python, column, fresh, runs, history, sizes)
            if memory:
                measured[column.label]["memory"] = measure_memory(python, column, fresh, runs, sizes)
        for column, peer_python in peer_columns:
            measured[column.label] = measure_column(peer_python, column, fresh, runs, sizes)
        if isinstance(measured.get("sqlite FULL"), dict):
            measured["sqlite FULL"]["fsync_ms"] = fsync_latency_ms(Path(urlsplit(base_url).path).parent)
        return measured


# ---------------------------------------------------------------- table ---


def format_value(value: float, unit: str) -> str:
    """A figure with its unit, with as many digits as its size deserves."""
    if unit.endswith("/s"):
        return f"{value:,.0f} {unit}"
    digits = 3 if value < 0.1 else 2 if value < 1 else 1 if value < 100 else 0
    return f"{value:.{digits}f} ms"


def format_target(row: Row, target: float | None) -> str:
    """'≤ 0.5 ms' / '≥ 4,000 tasks/s', or '—' where the design sets none."""
    if target is None:
        return "—"
    # Written as a budget is stated (0.5 ms, 4,000 tasks/s), not padded to a figure's digits.
    return ("≥ " if row.higher_is_better else "≤ ") + f"{target:,g} {row.unit}"


def target_for(row: Row, column: Column) -> float | None:
    """The row's target for a column's backend."""
    return row.target_sqlite if column.backend == "sqlite" else row.target_postgres


def meets(row: Row, value: float, target: float) -> bool:
    """Whether a figure is within its budget."""
    return value >= target if row.higher_is_better else value <= target


def cell(row: Row, measured: dict | str | None) -> str:
    """One table cell: the figure, or why there is none."""
    if measured is None:
        return "not run"
    if isinstance(measured, str):
        return measured
    return format_value(measured[row.key], row.unit)


def format_table(measured: dict[str, dict | str]) -> str:
    """The markdown table: workload | one column per configuration | the two targets."""
    header = ["workload", *(c.label for c in COLUMNS), "target sqlite", "target postgres"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in ROWS:
        cells = [
            row.label,
            *(cell(row, measured.get(c.label)) for c in COLUMNS),
            format_target(row, row.target_sqlite),
            format_target(row, row.target_postgres),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def missed_targets(measured: dict[str, dict | str]) -> list[str]:
    """'<column>: <workload> <value> (target <target>)' for every figure over budget."""
    missed = []
    for column in COLUMNS:
        figures = measured.get(column.label)
        if column.label not in TARGETED_COLUMNS or not isinstance(figures, dict):
            continue
        for row in ROWS:
            target = target_for(row, column)
            if target is not None and not meets(row, figures[row.key], target):
                missed.append(
                    f"{column.label}: {row.label.split(':')[0]} "
                    f"{format_value(figures[row.key], row.unit)} "
                    f"(target {format_target(row, target)})"
                )
    return missed


def describe_setup(runs: int, sizes: Sizes) -> str:
    """When, where and how the figures were measured (goes above the table)."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"Measured {now} on {os.cpu_count()} CPU(s), {platform.platform()}, "
        f"CPython {platform.python_version()}; release builds, no-op Python tasks, "
        f"default DefaultRunnerConfig; {runs} run(s) per workload, each on a fresh database; "
        f"W3 over {sizes.calls} calls per run after {sizes.warmup} warm-up calls; W1, W2 "
        "and cold: median of the runs."
    )


def notes(measured: dict[str, dict | str]) -> list[str]:
    """What a reader must know to compare the figures with the targets."""
    found = ["Targets apply to sqlite NORMAL and postgres; sqlite FULL is reported beside NORMAL, with no target."]
    if isinstance(measured.get("postgres"), dict):
        found.append(postgres_server_note())
    if fsync := fsync_note(measured):
        found.append(fsync)
    return found


def postgres_server_note() -> str:
    """Which PostgreSQL server the postgres figures come from, and its durability."""
    if os.environ.get(databases.POSTGRES_URL_ENV):
        return f"postgres ran on the server of {databases.POSTGRES_URL_ENV}, with that server's settings."
    return (
        "postgres ran on a throw-away cluster with PostgreSQL's default durability (fsync, "
        "synchronous_commit and full_page_writes on): every commit waits for its WAL flush."
    )


#: The history table's rows: (figure, label, unit).
HISTORY_ROWS = (
    ("w1_ms_per_task", "W1: chain of 100 tasks, per task", "ms"),
    ("w2_tasks_per_s", "W2: fan-out of 200 tasks + join", "tasks/s"),
    ("list_by_workflow_ms", "list_executions(workflow_name=…), 100 newest", "ms"),
    ("list_by_status_ms", 'list_executions(status="Failed"), none stored', "ms"),
)
#: How much slower than on an empty database a figure may be with the history loaded.
HISTORY_BUDGET = 1.25


def history_ratio(key: str, empty: float, loaded: float) -> float:
    """How many times worse the loaded figure is (above 1 = slower)."""
    return empty / loaded if key.endswith("per_s") else loaded / empty


def format_history_table(measured: dict[str, dict | str]) -> str | None:
    """Empty vs loaded per column, with the ratio; None when no column measured a history."""
    columns = [c for c in COLUMNS if isinstance(measured.get(c.label), dict) and "history" in measured[c.label]]
    if not columns:
        return None
    rows = measured[columns[0].label]["history"]["task_rows"]
    header = ["workload", *(f"{c.label}: empty / {rows:,} rows / ratio" for c in columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, label, unit in HISTORY_ROWS:
        cells = [label]
        for c in columns:
            h = measured[c.label]["history"]
            empty, loaded = h["empty"][key], h["loaded"][key]
            cells.append(
                f"{format_value(empty, unit)} / {format_value(loaded, unit)} / {history_ratio(key, empty, loaded):.2f}x"
            )
        lines.append("| " + " | ".join(cells) + " |")
    for key, label in (
        ("load_rows_per_s", "loading the history (SQL, one transaction)"),
        ("prune_rows_per_s", "prune_executions of it (batches of 1000)"),
    ):
        cells = [label, *(f"{measured[c.label]['history'][key]:,.0f} rows/s" for c in columns)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


#: The memory table's rows: (figure in the memory workload's JSON, label).
MEMORY_ROWS = (
    ("rss_bytes_per_queued_execution", "bytes per queued execution (RSS)"),
    ("bytes_per_stored_task", "bytes per stored task (disk)"),
    ("bytes_per_completed_execution", "bytes per completed execution (disk)"),
)


def format_memory_table(measured: dict[str, dict | str]) -> str | None:
    """Bytes per queued execution, per stored task and per completed execution, per column; None if not measured."""
    columns = [c for c in COLUMNS if isinstance(measured.get(c.label), dict) and "memory" in measured[c.label]]
    if not columns:
        return None
    header = ["memory", *(c.label for c in columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, label in MEMORY_ROWS:
        cells = [label, *(f"{measured[c.label]['memory'][key]:,.0f} B" for c in columns)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def describe_memory(measured: dict[str, dict | str]) -> str:
    """What the memory table counts (goes above it)."""
    first = next(m["memory"] for m in measured.values() if isinstance(m, dict) and "memory" in m)
    return (
        f"Memory: process RSS growth over {first['queued']:,} 1-task executions submitted while every worker "
        "is held busy, divided by their number (in a fresh process; the caller's handles, all held, are "
        f"included); disk growth over the empty schema once {first['executions']:,} executions of a chain of "
        f"{first['chain']} tasks completed ({first['task_rows']:,} task rows; SQLite: file + -wal after a "
        "TRUNCATE checkpoint; PostgreSQL: pg_total_relation_size of the cloaca tables, unvacuumed), per task "
        "row and per execution. Medians of the runs."
    )


def report(measured: dict[str, dict | str], runs: int, sizes: Sizes = Sizes()) -> str:
    """The whole markdown report: setup line, table, targets missed, notes."""
    parts = [describe_setup(runs, sizes), "", format_table(measured), ""]
    history = format_history_table(measured)
    if history is not None:
        parts += [
            f"History: the same workloads on an empty database and on one holding a long history "
            f"(ratio: how many times worse with it; budget {HISTORY_BUDGET}x).",
            "",
            history,
            "",
        ]
    memory = format_memory_table(measured)
    if memory is not None:
        parts += [describe_memory(measured), "", memory, ""]
    missed = missed_targets(measured)
    parts.append("Over budget: " + "; ".join(missed) + "." if missed else "Every measured figure is within its target.")
    parts += ["", *(f"- {note}" for note in notes(measured))]
    return "\n".join(parts)


def write_report(path: Path, text: str) -> None:
    """Write the markdown report to --output."""
    try:
        path.write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        raise PipelineError(f"could not write --output {path}: {exc}.") from exc


def elapsed_since(started: float) -> str:
    """Seconds since `started` (time.monotonic()), for the closing line."""
    return f"{time.monotonic() - started:.1f}s"
