"""What the peer workload scripts share: their command line, the statistics and the cold-start clock.

Imported by huey_workloads.py and dbos_workloads.py from their own directory
(each runs inside its peer's virtualenv, where the pipeline package is not
installed), so it needs nothing beyond the standard library.
"""

from __future__ import annotations

import argparse
import json
import math
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from types import ModuleType
from urllib.parse import urlsplit

#: Printed by a cold child once it holds its first result (the parent stops its clock there).
COLD_READY_LINE = "peer-bench-cold-ready"
#: How long one cold child, or one wait for results, may take before the measurement is abandoned.
TIMEOUT_S = 300
WORKLOADS = ("w3", "w1", "w2", "w4", "cold", "cold-child")


def parse_arguments(argv: list[str], description: str) -> argparse.Namespace:
    """The command line every peer script takes: the one of bench_workloads.py, plus W4's size."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("workload", choices=WORKLOADS)
    parser.add_argument(
        "--url", action="append", required=True, help="a fresh database for one run; repeat once per run"
    )
    parser.add_argument("--calls", type=int, default=200, help="W3: timed calls per run")
    parser.add_argument("--warmup", type=int, default=20, help="W3: untimed calls per run first")
    parser.add_argument("--chain", type=int, default=100, help="W1: tasks in the chain")
    parser.add_argument("--fanout", type=int, default=200, help="W2: tasks before the join")
    parser.add_argument("--executions", type=int, default=1000, help="W4: 1-task executions submitted at once")
    args = parser.parse_args(argv)
    for name in ("calls", "chain", "fanout", "executions"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must not be negative")
    return args


def fail(message: str) -> None:
    """Stop the measurement: a figure from a run where not every task ran would lie."""
    print(f"peer bench: {message}", file=sys.stderr)
    raise SystemExit(1)


def expect(what: str, got, wanted) -> None:
    """Fail unless a run's final value shows that every task of it ran."""
    if got != wanted:
        fail(f"{what}: expected {wanted!r}, got {got!r}; not every task ran")


def percentile(samples: list[float], fraction: float) -> float:
    """Nearest-rank percentile (no interpolation: every reported value was observed)."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def sqlite_path(url: str) -> str:
    """The file of a sqlite:///PATH URL."""
    return urlsplit(url).path


def sqlite_settings(path: str) -> dict:
    """The journal mode stored in the file and the synchronous level a new connection gets.

    Neither peer changes `synchronous` on its connections, so a new connection's
    level is the one they run with.
    """
    connection = sqlite3.connect(path)
    try:
        journal = connection.execute("PRAGMA journal_mode").fetchone()[0]
        level = connection.execute("PRAGMA synchronous").fetchone()[0]
    finally:
        connection.close()
    names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
    return {"journal_mode": str(journal).upper(), "synchronous": names.get(level, str(level))}


def latency_result(latencies_ms: list[float], runs: int) -> dict:
    """W3's JSON: p50/p95 over the timed calls of every run."""
    return {
        "workload": "w3",
        "runs": runs,
        "calls": len(latencies_ms),
        "p50_ms": percentile(latencies_ms, 0.50),
        "p95_ms": percentile(latencies_ms, 0.95),
    }


def chain_result(per_task_ms: list[float], length: int, completed: list[int]) -> dict:
    """W1's JSON: ms per task, median of the runs; `completed`: tasks each run saw done."""
    return {
        "completed_per_run": completed,
        "workload": "w1",
        "runs": len(per_task_ms),
        "tasks": length,
        "ms_per_task": statistics.median(per_task_ms),
        "per_run_ms_per_task": per_task_ms,
    }


def fanout_result(rates: list[float], tasks: int, completed: list[int]) -> dict:
    """W2's JSON: tasks/s (join included), median of the runs; `completed`: tasks each run saw done."""
    return {
        "completed_per_run": completed,
        "workload": "w2",
        "runs": len(rates),
        "tasks": tasks,
        "tasks_per_s": statistics.median(rates),
        "per_run_tasks_per_s": rates,
    }


def burst_result(rates: list[float], executions: int, completed: list[int]) -> dict:
    """W4's JSON: executions/s to all done, median of the runs; `completed`: executions each run saw done."""
    return {
        "completed_per_run": completed,
        "workload": "w4",
        "runs": len(rates),
        "executions": executions,
        "executions_per_s": statistics.median(rates),
        "per_run_executions_per_s": rates,
    }


def run_cold(script: str, urls: list[str]) -> dict:
    """Fresh processes: spawn -> first result, ms, median over the runs."""
    times_ms = [cold_process_ms(script, url) for url in urls]
    return {"workload": "cold", "runs": len(urls), "ms": statistics.median(times_ms), "per_run_ms": times_ms}


def cold_process_ms(script: str, url: str) -> float:
    """Start `script` as a cold child on `url`; ms until it reports its first result.

    The clock stops at the child's ready line, as for cloaca's cold start, so
    shutdown and interpreter exit are not counted.
    """
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, script, "cold-child", "--url", url], stdout=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline().strip()
        elapsed_ms = (time.perf_counter() - started) * 1000
        child.stdout.read()
        status = child.wait(timeout=TIMEOUT_S)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    if line != COLD_READY_LINE or status != 0:
        fail(f"a cold process on {url} failed (exit {status}, said {line!r}); its error is above")
    return elapsed_ms


def report_ready() -> None:
    """What a cold child prints once it holds its first result."""
    print(COLD_READY_LINE, flush=True)


def print_result(result: dict) -> None:
    """The one JSON object on stdout that bench.py reads."""
    print(json.dumps(result), flush=True)


def run_main(argv: list[str], description: str, peer: ModuleType, about: Callable[[str], dict]) -> None:
    """A peer script's main: run the workload `argv` names with the script's functions; print its JSON.

    `peer` is the script's module, with run_w3, run_w1, run_w2, run_w4 and
    cold_child; `about(url)` gives the fields every result carries (peer,
    version, durability).
    """
    args = parse_arguments(argv, description)
    if args.workload == "cold-child":
        peer.cold_child(args.url[0])
        return
    if args.workload == "cold":
        result = run_cold(peer.__file__, args.url)
    elif args.workload == "w3":
        result = peer.run_w3(args.url, args.calls, args.warmup)
    elif args.workload == "w1":
        result = peer.run_w1(args.url, args.chain)
    elif args.workload == "w2":
        result = peer.run_w2(args.url, args.fanout)
    else:
        result = peer.run_w4(args.url, args.executions)
    result.update(about(args.url[0]))
    print_result(result)
