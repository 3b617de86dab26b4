"""One of several runner processes sharing a postgres database (scale-out test).

The workflow: "root" -> m000 .. m{N-1} (independent) -> "join". Every task appends
"<task_id> <pid>" to the shared side-effect file; each middle task also sleeps a
little (so that one runner cannot drain the queue before the others wake up) and
sets ctx[task_id] = its pid.

usage: scale_worker.py --url URL --workflow NAME --side-file F --ready-file R
                       [--start --result-file J] [--tasks N] [--seconds S]

Every process registers the same workflow (same version), opens a runner and
writes its ready file. With --start it then runs the workflow (execute_async +
wait) and writes the result as JSON; without, it serves claims until an execution
of the workflow is finished (list_executions), or --seconds pass (exit 2).
"""

import os
import sys
import time

import cloaca
from _scenario import FINISHED, record, result_dict, runner_arguments, write_atomically, write_json


def define_workflow(name: str, side_file: str, tasks: int) -> None:
    middle_ids = [f"m{i:03d}" for i in range(tasks)]
    with cloaca.WorkflowBuilder(name) as builder:
        builder.description(f"scale-out: root, {tasks} independent tasks, join")

        @cloaca.task(id="root")
        def root(ctx):
            record(side_file, "root")
            ctx.set("root", os.getpid())
            return ctx

        def make_middle(task_id):
            def middle(ctx):
                record(side_file, task_id)
                time.sleep(0.02)
                ctx.set(task_id, os.getpid())
                return ctx

            middle.__name__ = task_id
            return cloaca.task(id=task_id, dependencies=["root"])(middle)

        for task_id in middle_ids:
            make_middle(task_id)

        @cloaca.task(id="join", dependencies=middle_ids)
        def join(ctx):
            record(side_file, "join")
            ctx.set("join_saw", sum(1 for k in middle_ids if k in ctx))
            return ctx


def main() -> int:
    p = runner_arguments("One of several runner processes sharing a database.")
    p.add_argument("--ready-file", required=True)
    p.add_argument("--start", action="store_true")
    p.add_argument("--result-file")
    p.add_argument("--tasks", type=int, default=200)
    p.add_argument("--seconds", type=float, default=180)
    args = p.parse_args()

    define_workflow(args.workflow, args.side_file, args.tasks)
    config = cloaca.DefaultRunnerConfig(enable_cron_scheduling=False)
    with cloaca.DefaultRunner.with_config(args.url, config) as runner:
        write_atomically(args.ready_file, str(os.getpid()))
        if args.start:
            handle = runner.execute_async(args.workflow, {"started_by": os.getpid()})
            result = handle.wait(timeout=args.seconds)
            write_json(args.result_file, result_dict(result))
            return 0
        deadline = time.monotonic() + args.seconds
        while time.monotonic() < deadline:
            done = runner.list_executions(workflow_name=args.workflow)
            if any(r.status in FINISHED for r in done):
                return 0
            time.sleep(0.2)
        return 2


if __name__ == "__main__":
    sys.exit(main())
