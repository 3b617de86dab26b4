"""`soak`: mixed workflows on several runner processes while a controller SIGKILLs them.

Per run: provide a database as `test` does (databases.py), build the debug
wheel and bring `.venvs/<backend>` up to date (build.py, venvs.py), then start
`runners` processes of soak_runner.py in that virtualenv on the one database.
They submit a stream of chains, fan-outs, retried tasks, async tasks and
always-failing workflows, and fire a cron tick every two seconds. Meanwhile the
controller here SIGKILLs a random runner every `kill_every` seconds and starts
a replacement (runner 0 is never killed: its RSS is sampled from
/proc/<pid>/status); on postgres it can also restart the server once, half-way.

Then a drain phase without kills: the runners stop submitting and disable the
schedule, and the controller waits (bounded) until no execution is unfinished.
After every runner has stopped, the checks read the database (sqlite3 or psql,
from this process, where cloaca is never loaded) and the side-effect ledger the
tasks wrote, and every broken promise is a violation (see VIOLATION_KINDS).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from cloaca_pipeline import bench, build, databases, project, soak_runner, suites, venvs
from cloaca_pipeline.errors import ChecksFailed, PipelineError

#: The script each runner process runs, inside the backend's virtualenv.
RUNNER_SCRIPT = Path(__file__).resolve().with_name("soak_runner.py")
DEFAULT_MINUTES = 2.0
DEFAULT_RUNNERS = 3
DEFAULT_KILL_EVERY_S = 3.0
#: Each runner starts one execution per this many seconds while not draining.
SUBMIT_INTERVAL_S = 1.0
#: How long the drain may take: leases are 2 s, so this is ample unless something is stuck.
DRAIN_TIMEOUT_S = 120.0
#: How long a runner may take to open its database, and to shut down when told.
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
RSS_SAMPLE_EVERY_S = 1.0
#: The long-lived runner's RSS may grow by at most this much over the second half.
RSS_GROWTH_LIMIT = 0.10
#: A task whose runner died in it this many times in a row is failed as RunnerLost (the engine's rule).
RUNNER_LOST_AFTER = 3
#: Examples of each violation kind shown below the table.
EXAMPLES_PER_KIND = 5

#: Every kind of violation the checks report, with what it means.
VIOLATION_KINDS = {
    "wrong-status": "an execution finished with another status than its workflow is designed to end with",
    "stuck": "an execution still pending or running after the drain",
    "task-state": "a task row missing, extra, or with another final status than designed",
    "lost-submission": "an execution a runner started is not in the database as started",
    "no-side-effect": "a task completed in the database but its body never finished (no ok line in the ledger)",
    "duplicate-side-effect": "a task body ran more often than its designed failures plus one per kill that hit it "
    "(and one per server restart)",
    "orphan-side-effect": "the ledger has side effects of an execution the database does not have",
    "kill-overreach": "one SIGKILL interrupted more attempts than the runner has worker threads",
    "cron-duplicate": "a cron tick started more than one execution",
    "cron-history": "the cron history and the cron executions disagree (missing, lost or extra rows)",
    "cron-gap": "a cron tick between the first and the last never started an execution",
    "rss-growth": f"the long-lived runner's RSS grew by more than {RSS_GROWTH_LIMIT:.0%} over the second half",
    "runner-exit": "a runner exited without being killed, or not with status 0 when told to stop",
}


@dataclass(frozen=True)
class Settings:
    """One soak run's parameters, validated."""

    backend: str
    minutes: float
    runners: int = DEFAULT_RUNNERS
    kill_every: float = DEFAULT_KILL_EVERY_S
    restart_server: bool = False


@dataclass(frozen=True)
class Violation:
    """One broken promise: its kind (a key of VIOLATION_KINDS) and what exactly was seen."""

    kind: str
    detail: str


@dataclass
class Outcome:
    """What a soak run did and found, for the table."""

    settings: Settings
    executions: list = field(default_factory=list)  # (id, workflow, status, key, error)
    task_rows: int = 0
    attempts: int = 0
    reruns: int = 0
    interrupted: int = 0
    runner_lost: int = 0
    kills: list = field(default_factory=list)  # pids
    restarts: int = 0
    restart_note: str = ""
    cron_ticks: int = 0
    rss: tuple | None = None  # (start kB, end kB, growth) over the second half
    violations: list = field(default_factory=list)
    work_dir: Path | None = None


# ---------------------------------------------------------------- input ---


def positive_number(option: str, value: str | None, default: float, what: str) -> float:
    """A positive, finite number given as text, else a bad-input error naming the option."""
    if value is None:
        return default
    try:
        number = float(str(value).strip())
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number <= 0:
        raise PipelineError(
            f"{option} {value!r} is not accepted: give {what} as a positive number (default {default:g})."
        )
    return number


def validate_settings(
    backend: str, minutes: str | None, runners: str | None, kill_every: str | None, restart_server: str | None
) -> Settings:
    """Check every option before anything is built or started; a bad one exits 2."""
    backend = project.validate_backend(backend)
    minutes_value = positive_number("--minutes", minutes, DEFAULT_MINUTES, "the length of the kill phase in minutes")
    kill_value = positive_number("--kill-every", kill_every, DEFAULT_KILL_EVERY_S, "the seconds between two kills")
    runner_count = DEFAULT_RUNNERS
    if runners is not None:
        text = str(runners).strip()
        if not re.fullmatch(r"\d+", text) or int(text) < 2:
            raise PipelineError(
                f"--runners {runners!r} is not accepted: give a whole number of at least 2 (default "
                f"{DEFAULT_RUNNERS}); one runner is never killed, the others are the targets."
            )
        runner_count = int(text)
    restart = backend == "postgres"
    if restart_server is not None:
        choice = str(restart_server).strip().lower()
        if choice not in ("on", "off"):
            raise PipelineError(f"--restart-server {restart_server!r} is not accepted: give on or off.")
        restart = choice == "on"
        if restart and backend != "postgres":
            raise PipelineError(
                f"--restart-server on needs a database server; the {backend} backend has none. "
                "Leave it out, or use --backend postgres."
            )
    return Settings(backend, minutes_value, runner_count, kill_value, restart)


# ------------------------------------------------------------- database ---


@contextlib.contextmanager
def soak_database(backend: str):
    """Yield (url, cluster) of a fresh database; cluster is the databases.Cluster to restart, or None.

    sqlite: a new file in a temporary directory. postgres: the throw-away
    cluster `test` uses (its own database is fresh), or, with
    CLOACA_TEST_POSTGRES_URL, a new database on that server (which the soak
    does not own, so cannot restart), dropped afterwards.
    """
    if backend == "sqlite":
        with databases.provide_database(backend) as url:
            yield url, None
        return
    if os.environ.get(databases.POSTGRES_URL_ENV, "").strip():
        with databases.provide_database(backend) as base_url:
            fresh = bench.FreshDatabases(backend, base_url)
            try:
                yield fresh.new_url("soak"), None
            finally:
                fresh.drop_all()
        return
    with databases.throwaway_postgres_cluster() as cluster:
        yield cluster.url, cluster


def sqlite_path(url: str) -> str:
    """The file of a sqlite URL."""
    return "/" + url.removeprefix("sqlite://").split("?", 1)[0].lstrip("/")


# psql output separators that cannot occur in the JSON and tracebacks the engine stores.
_FIELD_SEP, _RECORD_SEP, _NULL_MARK = "\x1f", "\x1e", "\x1d"


def query(url: str, sql: str) -> list[tuple]:
    """Rows of `sql`, each value a str or None, read without cloaca.

    sqlite is read with the sqlite3 module: this process never loads cloaca's
    own SQLite library, so the two cannot disturb each other's file locks.
    """
    if url.startswith("sqlite:"):
        db = sqlite3.connect(sqlite_path(url), timeout=30)
        try:
            rows = db.execute(sql).fetchall()
        finally:
            db.close()
        return [tuple(None if v is None else str(v) for v in row) for row in rows]
    separators = ["-F", _FIELD_SEP, "-R", _RECORD_SEP, "-P", f"null={_NULL_MARK}"]
    done = subprocess.run(
        [bench.find_psql(), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", *separators, "-d", url, "-c", sql],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if done.returncode != 0:
        raise ChecksFailed(f"psql could not read the soak database ({sql!r}): {done.stderr.strip()}")
    out = done.stdout.removesuffix("\n")
    if not out:
        return []
    return [tuple(None if v == _NULL_MARK else v for v in r.split(_FIELD_SEP)) for r in out.split(_RECORD_SEP)]


def unfinished_executions(url: str) -> int:
    """How many executions are neither completed nor failed."""
    try:
        rows = query(url, "SELECT count(*) FROM cloaca_executions WHERE status NOT IN ('completed', 'failed')")
    except sqlite3.OperationalError:  # the runners have not created the tables yet
        return 0
    return int(rows[0][0])


# ----------------------------------------------------------- the fleet ---


class Fleet:
    """The runner processes: one per slot; slot 0 is the long-lived one, never killed."""

    def __init__(self, settings: Settings, url: str, work_dir: Path):
        self.settings = settings
        self.url = url
        self.work_dir = work_dir
        self.slots: list[subprocess.Popen | None] = [None] * settings.runners
        self.killed: list[int] = []
        self.violations: list[Violation] = []
        self.random = random.Random()

    def start(self, slot: int) -> subprocess.Popen:
        """Start the runner of `slot` (slot 0 also registers the cron schedule)."""
        command = [
            str(project.venv_python(self.settings.backend)),
            str(RUNNER_SCRIPT),
            "--url",
            self.url,
            "--work-dir",
            str(self.work_dir),
            "--submit-interval",
            str(SUBMIT_INTERVAL_S),
        ]
        if slot == 0 and self.slots[0] is None:
            # Only the first runner 0 registers the schedule: one schedule per soak.
            command.append("--register-cron")
        log = self.work_dir / "logs" / f"slot{slot}-{len(self.killed)}-{time.monotonic_ns()}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                command,
                cwd=project.ROOT,
                env=suites.test_environment(PYTHONUNBUFFERED="1"),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        proc.log = log
        self.slots[slot] = proc
        return proc

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        """Wait until every runner has opened its database; a runner that dies first stops the soak."""
        deadline = time.monotonic() + timeout
        for proc in filter(None, self.slots):
            while not (self.work_dir / "control" / f"ready.{proc.pid}").exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    state = f"exited with {proc.returncode}" if proc.poll() is not None else "is not ready"
                    raise ChecksFailed(
                        f"a soak runner {state} before it opened the database; its output: {log_tail(proc.log)}"
                    )
                time.sleep(0.05)

    def long_lived_pid(self) -> int:
        """The pid of runner 0."""
        return self.slots[0].pid

    def kill_one(self) -> int:
        """SIGKILL a random runner other than runner 0, reap it, start its replacement; its pid."""
        slot = self.random.randrange(1, len(self.slots))
        proc = self.slots[slot]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        self.killed.append(proc.pid)
        self.start(slot)
        return proc.pid

    def replace_exited(self) -> None:
        """A runner that exited on its own is a violation; start a replacement so the soak goes on."""
        for slot, proc in enumerate(self.slots):
            if proc.poll() is not None:
                self.violations.append(
                    Violation(
                        "runner-exit", f"runner pid {proc.pid} exited with {proc.returncode}: {log_tail(proc.log)}"
                    )
                )
                self.start(slot)

    def all_drained(self) -> bool:
        """Whether every live runner has stopped submitting and disabled the schedule."""
        control = self.work_dir / "control"
        return all(proc.poll() is not None or (control / f"drained.{proc.pid}").exists() for proc in self.slots)

    def stop(self) -> None:
        """Tell every runner to stop and wait; one that fails to exit 0 is a violation."""
        (self.work_dir / "control" / "stop").touch()
        for proc in self.slots:
            try:
                status = proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                self.violations.append(Violation("runner-exit", f"runner pid {proc.pid} did not stop when told"))
                continue
            if status != 0:
                self.violations.append(
                    Violation("runner-exit", f"runner pid {proc.pid} stopped with {status}: {log_tail(proc.log)}")
                )

    def kill_all(self) -> None:
        """Whatever happened, leave no runner behind."""
        for proc in self.slots:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


def log_tail(path: Path, lines: int = 3) -> str:
    """The last lines of a runner's output, joined for a one-line detail."""
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:]) or "(no output)"
    except OSError:
        return "(no output)"


def rss_kb(pid: int) -> int | None:
    """VmRSS of a process in kB, from /proc (None when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_second_half(samples: list[tuple[float, int]]) -> tuple[int, int, float] | None:
    """(start, end, growth) of the RSS over the second half of the samples.

    Start and end are medians of the first and last quarter of that half, so a
    single sample taken during a burst of work does not decide the verdict.
    """
    half = samples[len(samples) // 2 :]
    if len(half) < 4:
        return None
    quarter = max(1, len(half) // 4)
    start = int(statistics.median(kb for _, kb in half[:quarter]))
    end = int(statistics.median(kb for _, kb in half[-quarter:]))
    return start, end, end / start - 1


# -------------------------------------------------------------- running ---


def soak_backend(settings: Settings) -> Outcome:
    """Database, debug build, virtualenv, kill phase, drain, checks: the outcome of one run."""
    outcome = Outcome(settings)
    with contextlib.ExitStack() as cleanup:
        url, cluster = cleanup.enter_context(soak_database(settings.backend))
        built = build.build_backend_wheel(settings.backend)
        venvs.ensure_backend_venv(settings.backend, built.wheel)
        work_dir = Path(tempfile.mkdtemp(prefix="cloaca-soak-"))
        for sub in ("control", "ledger", "attempts", "submitted", "logs"):
            (work_dir / sub).mkdir()
        fleet = Fleet(settings, url, work_dir)
        cleanup.callback(fleet.kill_all)
        if settings.restart_server and cluster is None:
            outcome.restart_note = f"not restarted: {databases.POSTGRES_URL_ENV} names a server this soak does not own"
        fleet.start(0)
        fleet.wait_ready()  # runner 0 registers the schedule before the others start
        for slot in range(1, settings.runners):
            fleet.start(slot)
        fleet.wait_ready()
        samples = run_phases(settings, fleet, url, cluster if settings.restart_server else None, outcome)
        fleet.stop()
        outcome.kills = list(fleet.killed)
        outcome.rss = rss_second_half(samples)
        outcome.violations = fleet.violations + check(url, work_dir, fleet.killed, outcome)
        outcome.work_dir = work_dir
        if not outcome.violations:
            shutil.rmtree(work_dir, ignore_errors=True)
    return outcome


def run_phases(settings: Settings, fleet: Fleet, url: str, cluster, outcome: Outcome) -> list[tuple[float, int]]:
    """The kill phase, then the drain; the long-lived runner's RSS samples of both."""
    samples: list[tuple[float, int]] = []
    long_lived = fleet.long_lived_pid()
    started = time.monotonic()
    end = started + settings.minutes * 60
    next_kill = started + settings.kill_every
    restart_at = started + settings.minutes * 30 if cluster is not None else None
    next_sample = started

    def sample(now: float) -> None:
        nonlocal next_sample
        if now >= next_sample:
            kb = rss_kb(long_lived)
            if kb is not None:
                samples.append((now, kb))
            next_sample = now + RSS_SAMPLE_EVERY_S

    print(f"soak: {settings.runners} runners up; kill phase of {settings.minutes:g} min", flush=True)
    while (now := time.monotonic()) < end:
        fleet.replace_exited()
        if now >= next_kill:
            fleet.kill_one()
            next_kill += settings.kill_every
        if restart_at is not None and now >= restart_at:
            print("soak: restarting the PostgreSQL server (pg_ctl restart -m fast)", flush=True)
            cluster.restart()
            outcome.restarts += 1
            restart_at = None
        sample(now)
        time.sleep(0.05)

    print(f"soak: {len(fleet.killed)} kills; draining (at most {DRAIN_TIMEOUT_S:g} s)", flush=True)
    (fleet.work_dir / "control" / "drain").touch()
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while time.monotonic() < deadline:
        fleet.replace_exited()
        sample(time.monotonic())
        if fleet.all_drained() and unfinished_executions(url) == 0:
            break
        time.sleep(0.25)
    return samples


# --------------------------------------------------------------- checks ---


def read_ledger(work_dir: Path) -> list[tuple[str, str, str, int, int]]:
    """Every ledger line of every process: (phase, key, task, attempt, pid)."""
    lines = []
    for path in sorted((work_dir / "ledger").glob("ledger.*")):
        for line in path.read_text().splitlines():
            phase, key, task, attempt, pid = line.split()
            lines.append((phase, key, task, int(attempt), int(pid)))
    return lines


def read_submissions(work_dir: Path) -> list[tuple[str, str, str]]:
    """Every execution a runner logged as started: (key, execution id, workflow)."""
    found = []
    for path in sorted((work_dir / "submitted").glob("submitted.*")):
        for line in path.read_text().splitlines():
            key, execution_id, workflow, _pid = line.split()
            found.append((key, execution_id, workflow))
    return found


def execution_key(workflow: str, input_context: str) -> str:
    """The ledger key of an execution, from its stored input (as the tasks compute it)."""
    data = json.loads(input_context)
    if "soak_key" in data:
        return data["soak_key"]
    return f"cron:{data.get('cron_scheduled_time')}"


def check(url: str, work_dir: Path, killed: list[int], outcome: Outcome) -> list[Violation]:
    """Every check, from the database and the ledger; fills the outcome's figures."""
    specs = soak_runner.WORKFLOWS
    violations: list[Violation] = []

    def flag(kind: str, detail: str) -> None:
        violations.append(Violation(kind, detail))

    executions = {}
    for exec_id, workflow, status, input_context, error in query(
        url, "SELECT id, workflow_name, status, input_context, error_message FROM cloaca_executions"
    ):
        executions[exec_id] = (workflow, status.capitalize(), execution_key(workflow, input_context), error or "")
    outcome.executions = [(i, *v) for i, v in executions.items()]
    tasks: dict[str, dict[str, str]] = defaultdict(dict)
    runner_lost: dict[str, list[str]] = defaultdict(list)  # execution -> tasks failed as RunnerLost
    rows = query(url, "SELECT execution_id, task_id, status, error_type FROM cloaca_task_executions")
    outcome.task_rows = len(rows)
    for exec_id, task_id, status, error_type in rows:
        tasks[exec_id][task_id] = status
        if status == "failed" and error_type == "RunnerLost":
            runner_lost[exec_id].append(task_id)
    ledger = read_ledger(work_dir)
    killed = set(killed)
    # Attempts begun in a runner that was killed later (one killed after its
    # body returned but before the outcome was committed counts as interrupted too).
    in_killed = Counter((key, task) for phase, key, task, _a, pid in ledger if phase == "start" and pid in killed)

    by_key: dict[str, list[str]] = defaultdict(list)
    for exec_id, (workflow, status, key, error) in executions.items():
        by_key[key].append(exec_id)
        spec = specs.get(workflow)
        if spec is None:
            flag("task-state", f"execution {exec_id} of a workflow the soak does not run: {workflow}")
            continue
        if status not in ("Completed", "Failed"):
            flag("stuck", f"{workflow} {key} (execution {exec_id}) is still {status} after the drain")
            continue
        lost = runner_lost.get(exec_id, [])
        if lost and all(in_killed[key, task] >= RUNNER_LOST_AFTER for task in lost):
            # As designed: a task whose runner died in it three times is failed,
            # not run a fourth time; its execution cannot end as planned.
            outcome.runner_lost += 1
            continue
        if status != spec.status:
            first_line = error.strip().splitlines()[0] if error.strip() else "no error message"
            flag("wrong-status", f"{workflow} {key} ended {status}, designed to end {spec.status}: {first_line}")
        found = tasks.get(exec_id, {})
        if set(found) != set(spec.tasks):
            flag("task-state", f"{workflow} {key} has task rows {sorted(found)}, designed {sorted(spec.tasks)}")
        for task_id, designed in spec.tasks.items():
            if task_id in found and found[task_id] != designed:
                flag("task-state", f"{workflow} {key}: task {task_id} ended {found[task_id]}, designed {designed}")

    for key, exec_id, workflow in read_submissions(work_dir):
        stored = executions.get(exec_id)
        if stored is None or stored[0] != workflow or stored[2] != key:
            flag("lost-submission", f"{workflow} {key} was started as {exec_id}; the database has {stored}")

    check_ledger(ledger, executions, by_key, tasks, killed, outcome, flag)
    check_cron(url, executions, by_key, outcome, flag)
    if outcome.rss is not None and outcome.rss[2] > RSS_GROWTH_LIMIT:
        start, end, growth = outcome.rss
        flag("rss-growth", f"runner 0 went from {start} kB to {end} kB over the second half ({growth:+.1%})")
    return violations


def interrupted_attempts(ledger, killed: set[int]) -> set[tuple[str, str, int, int]]:
    """(key, task, attempt, pid) of every attempt a kill cut short: begun by a killed runner, never ended."""
    ended = {(key, task, attempt, pid) for phase, key, task, attempt, pid in ledger if phase != "start"}
    return {
        (key, task, attempt, pid)
        for phase, key, task, attempt, pid in ledger
        if phase == "start" and pid in killed and (key, task, attempt, pid) not in ended
    }


def check_ledger(ledger, executions, by_key, tasks, killed: set[int], outcome: Outcome, flag) -> None:
    """Side effects against the database: each completed task ran, and reran only after a kill hit it."""
    starts: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
    ends: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for phase, key, task, attempt, pid in ledger:
        if phase == "start":
            starts[key, task].append((attempt, pid))
        else:
            ends[key, task][phase] += 1
    outcome.attempts = sum(len(s) for s in starts.values())
    interrupted = interrupted_attempts(ledger, killed)

    for (key, task), begun in starts.items():
        if not by_key.get(key):
            flag("orphan-side-effect", f"task {task} of {key} ran {len(begun)} time(s); no such execution is stored")
            continue
        completed = any(tasks.get(e, {}).get(task) == "completed" for e in by_key[key])
        hit_by = {pid for _, pid in begun if pid in killed}
        # A server restart can also make an attempt's outcome fail to be recorded, and
        # the task then runs again (at-least-once): one more per restart, like a kill.
        allowed = int(completed) + ends[key, task]["fail"] + len(hit_by) + outcome.restarts
        outcome.reruns += max(0, len(begun) - int(completed) - ends[key, task]["fail"])
        if len(begun) > allowed:
            flag(
                "duplicate-side-effect",
                f"task {task} of {key} ran {len(begun)} times: {ends[key, task]['fail']} designed failure(s), "
                f"{len(hit_by)} kill(s) hit it, {outcome.restarts} server restart(s); "
                f"attempts (attempt, pid): {sorted(begun)}",
            )

    for exec_id, (workflow, _status, key, _error) in executions.items():
        for task, status in tasks.get(exec_id, {}).items():
            if status == "completed" and ends[key, task]["ok"] == 0:
                flag("no-side-effect", f"task {task} of {workflow} {key} is completed, but its body never finished")
    outcome.interrupted = len(interrupted)
    for pid, count in Counter(pid for *_, pid in interrupted).items():
        if count > soak_runner.MAX_CONCURRENT_TASKS:
            flag(
                "kill-overreach",
                f"the kill of pid {pid} interrupted {count} attempts; it ran at most "
                f"{soak_runner.MAX_CONCURRENT_TASKS} at once",
            )


def check_cron(url: str, executions, by_key, outcome: Outcome, flag) -> None:
    """Every tick of the schedule: one history row, one execution, none missing in between."""
    history = query(url, "SELECT scheduled_time, attempt, execution_id, lost_at FROM cloaca_cron_executions")
    ticks = sorted({int(t) for t, *_ in history})
    outcome.cron_ticks = len(ticks)
    cron_executions = {i for i, v in executions.items() if v[0] == soak_runner.CRON_WORKFLOW}
    for key, ids in by_key.items():
        cron_ids = [i for i in ids if i in cron_executions]
        if len(cron_ids) > 1:
            flag("cron-duplicate", f"the tick {key.removeprefix('cron:')} started {len(cron_ids)} executions")
    for scheduled, attempt, exec_id, lost_at in history:
        if lost_at is not None or attempt != "1":
            flag("cron-history", f"the tick at {scheduled} ms has attempt {attempt}, lost at {lost_at}")
        if exec_id not in cron_executions:
            flag("cron-history", f"the tick at {scheduled} ms names execution {exec_id}, which is not stored")
    if len(cron_executions) != len(ticks):
        flag("cron-history", f"{len(ticks)} ticks in the history, {len(cron_executions)} cron executions")
    if not ticks:
        flag("cron-gap", "the schedule never fired")
    step_ms = 2000
    for before, after in zip(ticks, ticks[1:]):
        if after - before != step_ms:
            flag("cron-gap", f"no tick between {before} ms and {after} ms (one every {step_ms} ms)")


# ---------------------------------------------------------------- table ---


def report(outcome: Outcome) -> str:
    """The tables: executions by workflow and status, the figures, the violations by kind."""
    s = outcome.settings
    restart = "on" if s.restart_server else "off"
    if outcome.restart_note:
        restart += f" ({outcome.restart_note})"
    lines = [
        f"soak: {s.backend}, {s.minutes:g} min of kills, {s.runners} runners, a SIGKILL every "
        f"{s.kill_every:g} s, server restart {restart}",
        "",
        "| workflow | designed to end | started | Completed | Failed | unfinished |",
        "|---|---|---|---|---|---|",
    ]
    per = {name: Counter() for name in soak_runner.WORKFLOWS}
    for _id, workflow, status, _key, _error in outcome.executions:
        per.setdefault(workflow, Counter())[status] += 1
    total = Counter()
    for name, counts in per.items():
        spec = soak_runner.WORKFLOWS.get(name)
        started = sum(counts.values())
        unfinished = started - counts["Completed"] - counts["Failed"]
        total.update(started=started, Completed=counts["Completed"], Failed=counts["Failed"], unfinished=unfinished)
        lines.append(
            f"| {name} | {spec.status if spec else '?'} | {started} | {counts['Completed']} | "
            f"{counts['Failed']} | {unfinished} |"
        )
    lines.append(f"| total | | {total['started']} | {total['Completed']} | {total['Failed']} | {total['unfinished']} |")
    rss = "not enough samples"
    if outcome.rss is not None:
        start, end, growth = outcome.rss
        rss = f"{start / 1024:.1f} → {end / 1024:.1f} MiB ({growth:+.1%})"
    lines += [
        "",
        "| figure | value |",
        "|---|---|",
        f"| task rows | {outcome.task_rows} |",
        f"| task attempts (ledger) | {outcome.attempts} |",
        f"| attempts a kill cut short | {outcome.interrupted} |",
        f"| attempts run again after a kill or restart | {outcome.reruns} |",
        f"| executions failed by RunnerLost, as designed | {outcome.runner_lost} |",
        f"| kills (SIGKILL) | {len(outcome.kills)} |",
        f"| server restarts | {outcome.restarts} |",
        f"| cron ticks | {outcome.cron_ticks} |",
        f"| long-lived runner RSS, second half | {rss} |",
        "",
        "| violation | count |",
        "|---|---|",
    ]
    kinds = Counter(v.kind for v in outcome.violations)
    lines += [f"| {kind} | {kinds[kind]} |" for kind in VIOLATION_KINDS]
    for kind in VIOLATION_KINDS:
        found = [v for v in outcome.violations if v.kind == kind]
        if found:
            lines += ["", f"{kind}: {VIOLATION_KINDS[kind]}"]
            lines += [f"  - {v.detail}" for v in found[:EXAMPLES_PER_KIND]]
            if len(found) > EXAMPLES_PER_KIND:
                lines.append(f"  - … and {len(found) - EXAMPLES_PER_KIND} more")
    return "\n".join(lines)


def failure_message(outcome: Outcome) -> str:
    """The closing paragraph of a run with violations: each kind and its count, and where the evidence is."""
    kinds = Counter(v.kind for v in outcome.violations)
    listed = ", ".join(f"{kind} ({count})" for kind, count in kinds.items())
    return (
        f"the soak found violations: {listed} (details above). The ledger, the runners' output and the "
        f"control files are kept in {outcome.work_dir}."
    )
