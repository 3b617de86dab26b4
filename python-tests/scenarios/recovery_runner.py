"""A runner process for the crash-recovery tests.

The workflow (same definition, hence same version, in every mode unless
--register other-version):

    a -> b -> c        d (independent)

    a: ctx["a"] = ctx["input"] + 1
    b: ctx["b"] = ctx["a"] * 10       (with --slow-b: writes its marker, then sleeps
                                       for an hour so the test can SIGKILL it mid-run)
    c: ctx["c"] = ctx["b"] + 1
    d: ctx["d"] = "d"

Every task first appends "<task_id> <pid>" to the side-effect file (O_APPEND).
b then writes MARKER_DIR/b.<pid>.

Modes:
  start   register, execute_async(workflow, {"input": 1}), write the execution id to
          --result-file, then wait (up to --seconds) to be killed.
  resume  register, then poll get_execution(--execution-id) until it is finished
          (up to --seconds); write its result (plus "pid") as JSON to --result-file;
          exit 0 if finished, 2 if not.
  idle    register as --register says, open a runner (--no-recovery: with
          enable_recovery=False), write --ready-file, stay up --seconds, then write
          get_execution(--execution-id) (plus "pid") as JSON to --result-file.

All runners use task_lease_seconds=--lease (default 2).
"""

import os
import sys
import time

import cloaca
from _scenario import record, result_dict, runner_arguments, wait_finished, write_atomically, write_json

DESCRIPTION = "crash recovery: a -> b (slow) -> c, and d on its own"


def define_workflow(name: str, side_file: str, marker_dir: str, slow_b: bool, description: str = DESCRIPTION) -> None:
    with cloaca.WorkflowBuilder(name) as builder:
        builder.description(description)

        @cloaca.task(id="a")
        def a(ctx):
            record(side_file, "a")
            ctx.set("a", ctx.get("input") + 1)
            return ctx

        @cloaca.task(id="b", dependencies=["a"])
        def b(ctx):
            record(side_file, "b")
            write_atomically(os.path.join(marker_dir, f"b.{os.getpid()}"), str(os.getpid()))
            if slow_b:
                time.sleep(3600)
            ctx.set("b", ctx.get("a") * 10)
            return ctx

        @cloaca.task(id="c", dependencies=["b"])
        def c(ctx):
            record(side_file, "c")
            ctx.set("c", ctx.get("b") + 1)
            return ctx

        @cloaca.task(id="d")
        def d(ctx):
            record(side_file, "d")
            ctx.set("d", "d")
            return ctx


def main() -> int:
    p = runner_arguments("A runner process to kill mid-task and resume.")
    p.add_argument("--marker-dir", required=True)
    p.add_argument("--mode", choices=("start", "resume", "idle"), required=True)
    p.add_argument("--slow-b", action="store_true")
    p.add_argument("--register", choices=("same", "none", "other-version"), default="same")
    p.add_argument("--no-recovery", action="store_true")
    p.add_argument("--execution-id")
    p.add_argument("--result-file")
    p.add_argument("--ready-file")
    p.add_argument("--seconds", type=float, default=120)
    p.add_argument("--lease", type=int, default=2)
    args = p.parse_args()

    if args.register == "same":
        define_workflow(args.workflow, args.side_file, args.marker_dir, args.slow_b)
    elif args.register == "other-version":
        # Same name, another description: another content hash, so another version.
        define_workflow(
            args.workflow, args.side_file, args.marker_dir, args.slow_b, description=DESCRIPTION + " (changed)"
        )

    config = cloaca.DefaultRunnerConfig(
        task_lease_seconds=args.lease, enable_recovery=not args.no_recovery, enable_cron_scheduling=False
    )
    with cloaca.DefaultRunner.with_config(args.url, config) as runner:
        if args.mode == "start":
            handle = runner.execute_async(args.workflow, {"input": 1})
            write_atomically(args.result_file, handle.execution_id)
            time.sleep(args.seconds)  # the test kills this process long before
            return 3

        if args.mode == "resume":
            result = wait_finished(runner, args.execution_id, args.seconds)
            write_json(args.result_file, {**result_dict(result), "pid": os.getpid()})
            return 0 if result.status in ("Completed", "Failed") else 2

        # idle
        write_atomically(args.ready_file, str(os.getpid()))
        time.sleep(args.seconds)
        write_json(args.result_file, {**result_dict(runner.get_execution(args.execution_id)), "pid": os.getpid()})
        return 0


if __name__ == "__main__":
    sys.exit(main())
