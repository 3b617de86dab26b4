"""angreal cloaca …: generate, build, test, check, lint, dist, scrub, demo, bench and soak cloaca's backends.

Each command reads as the steps of the pipeline; the steps live in the
cloaca_pipeline package beside this file. Every failure ends in one paragraph
on stderr and a non-zero exit status (see cloaca_pipeline/errors.py).
"""

import time

import angreal

from cloaca_pipeline import (
    bench as bench_steps,
    build,
    check as chain_check,
    demo as demo_steps,
    dist as dist_steps,
    lint as lint_steps,
    peers as peer_steps,
    project,
    render,
    scrub as scrub_steps,
    soak as soak_steps,
    suites,
)
from cloaca_pipeline.errors import ChecksFailed, PipelineError, reported

cloaca = angreal.command_group(name="cloaca", about="Build, test and check cloaca's backends")

BACKEND_HELP = "backend to act on: sqlite or postgres (the list is [tool.cloaca] backends)"


@cloaca()
@angreal.command(name="generate", about="Render templates/ for one backend into the tree")
@angreal.argument(name="backend", long="backend", help=BACKEND_HELP, required=True)
@reported
def generate(backend=None):
    """Render templates/ for BACKEND and list the files written."""
    backend = project.validate_backend(backend)
    for path in render.generate(backend):
        print(f"generated {project.relative(path)}")


@cloaca()
@angreal.command(name="build", about="Generate, then build one backend's wheel (skipped when unchanged)")
@angreal.argument(name="backend", long="backend", help=BACKEND_HELP, required=True)
@angreal.argument(
    name="release",
    long="release",
    is_flag=True,
    takes_value=False,
    help="optimised build (the default is a debug build, faster to compile)",
)
@reported
def build_backend(backend=None, release=False):
    """Generate, then build BACKEND's wheel into cloaca-backend/target/wheels (or skip)."""
    built = build.build_backend_wheel(project.validate_backend(backend), release=bool(release))
    state = "up to date, build skipped" if built.skipped else f"built in {built.seconds:.1f}s"
    print(f"{project.relative(built.wheel)} ({state})")


@cloaca()
@angreal.command(name="test", about="Build each backend and run python-tests/ in its own virtualenv")
@angreal.argument(name="backend", long="backend", help=BACKEND_HELP + "; default: all, plus the pipeline's own tests")
@angreal.argument(name="k", short="k", help="pytest -k expression selecting tests")
@angreal.argument(name="pytest_args", long="pytest-args", help='extra pytest arguments, e.g. --pytest-args="-x -q"')
@reported
def test(backend=None, k=None, pytest_args=None):
    """Run every selected suite, print the summary, fail if any suite failed."""
    started = time.monotonic()
    extra = suites.pytest_arguments(k, pytest_args)
    # -k selects pytest tests; the Rust unit tests run only when nothing is selected.
    results = [suites.run_backend_suite(b, extra, rust_tests=not k) for b in project.selected_backends(backend)]
    if backend is None:
        results.append(suites.run_pipeline_suite(extra))
    suites.print_summary(results, time.monotonic() - started)
    failed = [r.name for r in results if r.failed]
    if failed:
        raise ChecksFailed(f"tests failed for: {', '.join(failed)} (pytest output above).")
    if all(r.status in ("no tests", "skipped") for r in results):
        reason = (
            "the -k expression selected nothing in any suite"
            if k
            else "every suite was skipped (see the warnings above)"
        )
        raise ChecksFailed(f"no test ran: {reason}.")


@cloaca()
@angreal.command(name="check", about="Verify the Rust -> wrapper -> dispatcher chain; name the file to fix")
@reported
def check():
    """Report every broken link of the chain with the file to fix."""
    problems = chain_check.run_all_checks()
    chain_check.print_report(problems)
    if problems:
        raise ChecksFailed(f"{len(problems)} problem(s) in the chain; each names the file to fix.")


@cloaca()
@angreal.command(name="lint", about="cargo fmt, cargo clippy -D warnings (per backend) and ruff, each reported")
@reported
def lint():
    """Run every lint, print a summary, and name each failed tool with what fixes it."""
    lint_steps.require_tools()
    results = lint_steps.run_all()
    lint_steps.print_summary(results)
    failed = [r for r in results if not r.passed]
    if failed:
        raise ChecksFailed(lint_steps.failure_message(failed))


@cloaca()
@angreal.command(name="dist", about="Build every backend's release wheel and the dispatcher's wheel into dist/")
@reported
def dist():
    """Fill dist/ with one release wheel per backend plus the dispatcher's wheel, and list them."""
    house = dist_steps.build_wheelhouse()
    for wheel in house.wheels:
        state = " (up to date, build skipped)" if wheel.name in house.skipped else ""
        print(f"{project.relative(wheel)}{state}")
    print(f"dist finished in {house.seconds:.1f}s")
    print("install from it with: pip install --no-index --find-links dist 'cloaca[sqlite]'  (or 'cloaca[postgres]')")


@cloaca()
@angreal.command(name="scrub", about="Remove what the pipeline generated and built (never a tracked file)")
@angreal.argument(
    name="deep",
    long="deep",
    is_flag=True,
    takes_value=False,
    help="also remove the cargo target directory (next build compiles from scratch)",
)
@reported
def scrub(deep=False):
    """Remove what the pipeline made and list it."""
    removed = scrub_steps.scrub(deep=bool(deep))
    for path in removed:
        print(f"removed {path}")
    print(f"scrubbed {len(removed)} path(s)")


@cloaca()
@angreal.command(name="demo", about="Build the sqlite backend and run examples/quickstart.py with it")
@reported
def demo():
    """Run examples/quickstart.py against a fresh sqlite build."""
    demo_steps.run_quickstart("sqlite")


@cloaca()
@angreal.command(name="bench", about="Measure the engine workloads on release builds against their targets (or peers)")
@angreal.argument(name="backend", long="backend", help=BACKEND_HELP + "; default: all")
@angreal.argument(
    name="runs", long="runs", help=f"runs per workload, each on a fresh database (default {bench_steps.DEFAULT_RUNS})"
)
@angreal.argument(name="output", long="output", help="also write the report as markdown to this file")
@angreal.argument(
    name="history",
    long="history",
    help="also measure W1, W2 and list_executions with this many completed task rows stored, beside an empty database",
)
@angreal.argument(
    name="memory",
    long="memory",
    is_flag=True,
    takes_value=False,
    help="also measure bytes of RSS per queued execution and bytes on disk per stored task and execution",
)
@angreal.argument(
    name="peers",
    long="peers",
    is_flag=True,
    takes_value=False,
    help="also run the workloads on Huey and DBOS (pinned in [tool.cloaca.bench-peers]) and print the ratios",
)
@reported
def bench(backend=None, runs=None, output=None, history=None, memory=False, peers=False):
    """Measure every selected backend's release build; print the table (and write it with --output)."""
    started = time.monotonic()
    command = peer_steps.command_line({"backend": backend, "runs": runs, "output": output})
    # All input is checked before anything is built, installed or started.
    runs = bench_steps.validate_runs(runs)
    output = bench_steps.validate_output(output)
    history = bench_steps.validate_history(history)
    backends = project.selected_backends(backend)
    if peers and history is not None:
        raise PipelineError(
            "--peers and --history cannot be combined: the history workload is cloaca's own "
            "(the peers have no comparable listing); run them as two commands."
        )
    if peers and memory:
        raise PipelineError(
            "--peers and --memory cannot be combined: the memory workload is cloaca's own "
            "(the peers' scripts do not measure it); run them as two commands."
        )
    pins = peer_steps.read_pins() if peers else None
    peer_columns = peer_steps.prepare(backends, pins) if peers else {}
    measured = {}
    for b in backends:
        measured.update(
            bench_steps.bench_backend(
                b, runs, history=history, peer_columns=peer_columns.get(b, ()), memory=bool(memory)
            )
        )
    text = peer_steps.report(measured, runs, command) if peers else bench_steps.report(measured, runs)
    print("\n" + text)
    if output is not None:
        bench_steps.write_report(output, text)
        print(f"wrote {output}")
    print(f"bench finished in {bench_steps.elapsed_since(started)}", flush=True)


@cloaca()
@angreal.command(name="soak", about="Mixed workflows on several runners while a controller SIGKILLs them; check it all")
@angreal.argument(name="backend", long="backend", help=BACKEND_HELP, required=True)
@angreal.argument(
    name="minutes", long="minutes", help=f"length of the kill phase (default {soak_steps.DEFAULT_MINUTES:g})"
)
@angreal.argument(
    name="runners", long="runners", help=f"runner processes on the database (default {soak_steps.DEFAULT_RUNNERS})"
)
@angreal.argument(
    name="kill_every",
    long="kill-every",
    help=f"seconds between two SIGKILLs (default {soak_steps.DEFAULT_KILL_EVERY_S:g})",
)
@angreal.argument(
    name="restart_server",
    long="restart-server",
    help="on or off: restart the PostgreSQL server once, half-way (default on for postgres, off for sqlite)",
)
@reported
def soak(backend=None, minutes=None, runners=None, kill_every=None, restart_server=None):
    """Run the soak on BACKEND, print its table, fail if any check found a violation."""
    started = time.monotonic()
    # All input is checked before anything is built or started.
    settings = soak_steps.validate_settings(backend, minutes, runners, kill_every, restart_server)
    outcome = soak_steps.soak_backend(settings)
    print("\n" + soak_steps.report(outcome))
    print(f"soak finished in {bench_steps.elapsed_since(started)}", flush=True)
    if outcome.violations:
        raise ChecksFailed(soak_steps.failure_message(outcome))
