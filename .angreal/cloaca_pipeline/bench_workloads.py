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
  cold  new process -> import cloaca -> open runner -> first 1-task result, ms
        (median of one fresh process per run).

Each --url is one run's database (the caller makes each one fresh), so the
number of runs is the number of --url options. Tasks are no-ops: the figures
are the engine's overhead. A run whose execution does not complete exits 1
with the execution's error on stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time

#: Printed by a cold child once it holds its first result (the parent stops its clock there).
COLD_READY_LINE = "cloaca-bench-cold-ready"
#: How long one cold child may take before the measurement is abandoned.
COLD_CHILD_TIMEOUT_S = 120


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
    parser.add_argument("workload", choices=["w3", "w1", "w2", "cold", "cold-child"])
    parser.add_argument(
        "--url", action="append", required=True, help="a fresh database for one run; repeat once per run"
    )
    parser.add_argument("--calls", type=int, default=200, help="W3: timed calls per run")
    parser.add_argument("--warmup", type=int, default=20, help="W3: untimed calls per run first")
    parser.add_argument("--chain", type=int, default=100, help="W1: tasks in the chain")
    parser.add_argument("--fanout", type=int, default=200, help="W2: tasks before the join")
    args = parser.parse_args(argv)
    for name in ("calls", "chain", "fanout"):
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
    if args.workload == "cold":
        result = run_cold(args.url)
    else:
        import cloaca

        if args.workload == "w3":
            result = run_w3(cloaca, args.url, args.calls, args.warmup)
        elif args.workload == "w1":
            result = run_w1(cloaca, args.url, args.chain)
        else:
            result = run_w2(cloaca, args.url, args.fanout)
        result["backend"] = cloaca.get_backend()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
