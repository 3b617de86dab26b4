"""One runner process of `angreal cloaca soak`, run INSIDE a backend's virtualenv.

This is a standalone script, not part of the pipeline package: the soak
controller (cloaca_pipeline/soak.py) starts several of these with the test
virtualenv's interpreter, SIGKILLs them at random and starts replacements. The
controller also imports this file for WORKFLOWS (what each workflow's tasks and
execution must end as), so cloaca is imported only in main().

usage: soak_runner.py --url URL --work-dir DIR [--register-cron] [--submit-interval S]

A runner registers every soak workflow, opens a DefaultRunner on URL and
writes DIR/control/ready.<pid>. With --register-cron it first registers the
cron schedule (its id goes to DIR/control/schedule-id). Until
DIR/control/drain exists it starts one execution of a random soak workflow every
--submit-interval seconds, each with {"soak_key": "<pid>-<n>"} as its input,
and appends "<key> <execution id> <workflow> <pid>" to
DIR/submitted/submitted.<pid>. Once DIR/control/drain exists it disables the
cron schedule, writes DIR/control/drained.<pid> and serves until
DIR/control/stop exists, then shuts the runner down and exits 0.

Every task attempt appends lines to the side-effect ledger
DIR/ledger/ledger.<pid> (one O_APPEND write per line, so lines of processes
never interleave):

    start <key> <task id> <attempt> <pid>    first thing in the body: the side effect
    ok    <key> <task id> <attempt> <pid>    the body is about to return
    fail  <key> <task id> <attempt> <pid>    the body is about to raise on purpose

<key> is the execution's soak_key, or "cron:<cron_scheduled_time>" for a cron
tick. Tasks are not told their attempt number, so <attempt> is counted here: a
counter file per (key, task) under DIR/attempts/ gets one byte per attempt.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

#: The cron schedule every two seconds (six fields: seconds first).
CRON_EXPRESSION = "*/2 * * * * *"
CRON_WORKFLOW = "soak_cron"
#: The flaky task fails its first attempts on purpose (interrupted ones count).
FLAKY_FAILURES = 2
#: Worker threads per runner: the most attempts one SIGKILL can interrupt.
MAX_CONCURRENT_TASKS = 4
#: Short leases, so that the tasks of a killed runner are taken over within seconds.
TASK_LEASE_SECONDS = 2
#: How long a task body takes, in seconds (uniform): long enough for kills to land mid-task.
TASK_SECONDS = (0.05, 0.5)


@dataclass(frozen=True)
class Spec:
    """What one soak workflow's execution must end as."""

    status: str  # the execution's final status
    tasks: dict[str, str]  # task id -> its final status in cloaca_task_executions
    weight: int  # how often runners start it (0: only cron starts it)


WORKFLOWS = {
    "soak_chain": Spec("Completed", {t: "completed" for t in ("c1", "c2", "c3", "c4")}, 4),
    "soak_fanout": Spec("Completed", {t: "completed" for t in ("root", *(f"f{i}" for i in range(6)), "join")}, 3),
    "soak_retry": Spec("Completed", {"flaky": "completed", "after": "completed"}, 2),
    "soak_async": Spec("Completed", {"a1": "completed", "a2": "completed"}, 2),
    "soak_doomed": Spec("Failed", {"boom": "failed", "after_boom": "skipped", "bystander": "completed"}, 1),
    CRON_WORKFLOW: Spec("Completed", {"tick": "completed"}, 0),
}


class SoakFailure(Exception):
    """Raised by the tasks that fail on purpose."""


class Ledger:
    """The side-effect ledger of this process, and the attempt counters shared by all."""

    def __init__(self, work_dir: Path):
        self.path = work_dir / "ledger" / f"ledger.{os.getpid()}"
        self.attempts = work_dir / "attempts"

    @staticmethod
    def key_of(ctx) -> str:
        """The execution's key: its soak_key, or the cron tick it runs for."""
        key = ctx.get("soak_key")
        return key if key is not None else f"cron:{ctx.get('cron_scheduled_time')}"

    def next_attempt(self, key: str, task_id: str) -> int:
        """1 + the attempts of (key, task) begun so far, in any process."""
        fd = os.open(self.attempts / f"{key}.{task_id}", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, b".")
            return os.fstat(fd).st_size
        finally:
            os.close(fd)

    def write(self, phase: str, key: str, task_id: str, attempt: int) -> None:
        """One ledger line, in one O_APPEND write."""
        line = f"{phase} {key} {task_id} {attempt} {os.getpid()}\n".encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def begin(self, ctx, task_id: str) -> tuple[str, int]:
        """Count the attempt and leave its side effect; (key, attempt)."""
        key = self.key_of(ctx)
        attempt = self.next_attempt(key, task_id)
        self.write("start", key, task_id, attempt)
        return key, attempt


def define_workflows(cloaca, ledger: Ledger) -> None:
    """Register every soak workflow in this process (the same definitions, hence versions, in every runner)."""

    def sync_task(task_id: str, fail_first: int = 0, **options):
        def body(ctx):
            key, attempt = ledger.begin(ctx, task_id)
            time.sleep(random.uniform(*TASK_SECONDS))
            if attempt <= fail_first:
                ledger.write("fail", key, task_id, attempt)
                raise SoakFailure(f"{task_id} fails attempt {attempt} on purpose")
            ctx.set(task_id, os.getpid())
            ledger.write("ok", key, task_id, attempt)
            return ctx

        body.__name__ = task_id
        return cloaca.task(id=task_id, **options)(body)

    def async_task(task_id: str, **options):
        import asyncio

        async def body(ctx):
            key, attempt = ledger.begin(ctx, task_id)
            await asyncio.sleep(random.uniform(*TASK_SECONDS))
            ctx.set(task_id, os.getpid())
            ledger.write("ok", key, task_id, attempt)
            return ctx

        body.__name__ = task_id
        return cloaca.task(id=task_id, **options)(body)

    with cloaca.WorkflowBuilder("soak_chain") as builder:
        builder.description("soak: a chain of four tasks")
        for previous, task_id in zip((None, "c1", "c2", "c3"), ("c1", "c2", "c3", "c4")):
            sync_task(task_id, dependencies=[previous] if previous else None)

    with cloaca.WorkflowBuilder("soak_fanout") as builder:
        builder.description("soak: a root, six parallel tasks, a join")
        sync_task("root")
        middle = [f"f{i}" for i in range(6)]
        for task_id in middle:
            sync_task(task_id, dependencies=["root"])
        sync_task("join", dependencies=middle)

    with cloaca.WorkflowBuilder("soak_retry") as builder:
        builder.description(f"soak: a task that fails its first {FLAKY_FAILURES} attempts, then its dependent")
        # More retries than planned failures: an attempt a kill interrupts is
        # not a failure, so the task always completes in the end.
        sync_task(
            "flaky",
            fail_first=FLAKY_FAILURES,
            retry_attempts=FLAKY_FAILURES + 1,
            retry_backoff="fixed",
            retry_delay_ms=200,
        )
        sync_task("after", dependencies=["flaky"])

    with cloaca.WorkflowBuilder("soak_async") as builder:
        builder.description("soak: two async tasks")
        async_task("a1")
        async_task("a2", dependencies=["a1"])

    with cloaca.WorkflowBuilder("soak_doomed") as builder:
        builder.description("soak: a task that always fails, its skipped dependent, an independent task")
        sync_task("boom", fail_first=sys.maxsize, retry_attempts=1, retry_backoff="fixed", retry_delay_ms=100)
        sync_task("after_boom", dependencies=["boom"])
        sync_task("bystander")

    with cloaca.WorkflowBuilder(CRON_WORKFLOW) as builder:
        builder.description("soak: the task of every cron tick")
        sync_task("tick")


def append_line(path: Path, line: str) -> None:
    """Append one line with a single O_APPEND write."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def write_atomically(path: Path, text: str) -> None:
    """Write `text` so that a reader never sees a partial file."""
    tmp = path.with_name(f"{path.name}.tmp.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description="one runner process of angreal cloaca soak")
    parser.add_argument("--url", required=True)
    parser.add_argument("--work-dir", required=True, type=Path)
    parser.add_argument("--register-cron", action="store_true")
    parser.add_argument("--submit-interval", type=float, default=1.0)
    return parser.parse_args(argv)


def open_runner(cloaca, url: str, config, patience: float = 60.0):
    """A DefaultRunner on `url`, opened again while the database is unreachable.

    Creating a runner does not wait out an outage (a wrong port should be
    reported at once); a process manager starting a runner while the server
    restarts tries again, and so does the soak's replacement runner.
    """
    deadline = time.monotonic() + patience
    while True:
        try:
            return cloaca.DefaultRunner.with_config(url, config)
        except cloaca.DatabaseUnavailableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def main(argv: list[str]) -> int:
    """Serve, submit, drain, stop (see the module docstring)."""
    import cloaca

    args = parse_arguments(argv)
    control = args.work_dir / "control"
    ledger = Ledger(args.work_dir)
    submitted = args.work_dir / "submitted" / f"submitted.{os.getpid()}"
    define_workflows(cloaca, ledger)
    config = cloaca.DefaultRunnerConfig(
        max_concurrent_tasks=MAX_CONCURRENT_TASKS,
        task_lease_seconds=TASK_LEASE_SECONDS,
        cron_poll_interval_seconds=0.5,
    )
    names = [name for name, spec in WORKFLOWS.items() if spec.weight]
    weights = [WORKFLOWS[name].weight for name in names]
    with open_runner(cloaca, args.url, config) as runner:
        if args.register_cron:
            schedule_id = runner.register_cron_workflow(CRON_WORKFLOW, CRON_EXPRESSION)
            write_atomically(control / "schedule-id", schedule_id)
        write_atomically(control / f"ready.{os.getpid()}", str(os.getpid()))
        count = 0
        # The pid alone is not unique over a long soak: pids are reused once
        # the kernel's pid_max (often 32768) wraps around.
        token = f"{os.getpid()}.{random.getrandbits(32):08x}"
        while not (control / "drain").exists():
            count += 1
            name = random.choices(names, weights)[0]
            key = f"{token}-{count}"
            handle = runner.execute_async(name, {"soak_key": key})
            append_line(submitted, f"{key} {handle.execution_id} {name} {os.getpid()}")
            time.sleep(args.submit_interval)
        # Every runner disables the schedule (the same write, whoever is first):
        # once a runner has acknowledged the drain, no tick is fired any more.
        schedule_file = control / "schedule-id"
        if schedule_file.exists():
            runner.set_cron_schedule_enabled(schedule_file.read_text().strip(), False)
        write_atomically(control / f"drained.{os.getpid()}", str(os.getpid()))
        while not (control / "stop").exists():
            time.sleep(0.1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
