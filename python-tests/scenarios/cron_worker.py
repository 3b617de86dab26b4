"""A runner process with cron scheduling on (cron tests).

The workflow, one task "tick" (the same definition, hence the same version, in
every process; test_cron.py imports define_workflow from here for its own runners):

    tick: appends "start <cron_scheduled_time> <pid>" to the side-effect file;
          while the --block-marker file exists, waits (the test SIGKILLs the
          process meanwhile, or removes the marker); then appends
          "done <cron_scheduled_time> <pid>" and sets ctx["ran_in"] = pid.
          With fail=True (in-process tests only) it raises after "start".

usage: cron_worker.py --url URL --workflow NAME --side-file F --ready-file R
                      [--block-marker M] [--config FIELD=JSON ...]
                      [--register EXPR | --register-once-after SECONDS]
                      [--instance NAME [--params JSON]]
                      [--schedule-file P] [--stop-file S] [--seconds N]

Registers the workflow and opens a runner with DefaultRunnerConfig(**fields),
where fields start as {"cron_poll_interval_seconds": 0.2} and each --config
FIELD=JSON sets one more (JSON values: 1, 0.5, true, false). With --register it
registers a schedule of the workflow with that expression; with
--register-once-after it registers a daily UTC schedule whose tick is the
whole second SECONDS from now, so it fires once while the test runs. With
--instance, the schedule is a workflow instance of that name whose params are
the JSON object --params (default {}). Either way the schedule id goes to
--schedule-file (before the ready file is written). Then it writes its pid to the ready file and serves until the stop
file exists (exit 0) or --seconds pass (exit 2).
"""

import json
import os
import sys
import time
from datetime import datetime, timedelta, timezone
from typing import Optional

import cloaca
from _scenario import append_line, config_fields, runner_arguments, write_atomically

DESCRIPTION = "cron scenario: one task that records the tick it runs for"


def define_workflow(name: str, side_file: str, block_marker: Optional[str] = None, fail: bool = False) -> None:
    with cloaca.WorkflowBuilder(name) as builder:
        builder.description(DESCRIPTION)

        @cloaca.task(id="tick")
        def tick(ctx):
            scheduled = ctx.get("cron_scheduled_time")
            append_line(side_file, f"start {scheduled} {os.getpid()}")
            if fail:
                raise RuntimeError(f"tick {scheduled} failed on purpose")
            deadline = time.monotonic() + 600
            while block_marker and os.path.exists(block_marker) and time.monotonic() < deadline:
                time.sleep(0.05)
            append_line(side_file, f"done {scheduled} {os.getpid()}")
            ctx.set("ran_in", os.getpid())
            return ctx


def daily_expression(instants) -> str:
    """A 6-field expression firing at these whole UTC seconds, all in one minute, once a day."""
    first = instants[0]
    assert all(
        t.microsecond == 0 and (t.date(), t.hour, t.minute) == (first.date(), first.hour, first.minute)
        for t in instants
    ), f"not whole seconds of one minute: {instants}"
    seconds = ",".join(str(t.second) for t in instants)
    return f"{seconds} {first.minute} {first.hour} * * *"


def once_after(seconds: float) -> str:
    """A daily UTC expression whose next tick is the whole second `seconds` from now."""
    when = datetime.now(timezone.utc) + timedelta(seconds=seconds)
    when = when.replace(microsecond=0) + timedelta(seconds=1)
    return daily_expression([when])


def main() -> int:
    p = runner_arguments("A runner process that fires cron ticks.")
    p.add_argument("--ready-file", required=True)
    p.add_argument("--block-marker")
    p.add_argument("--config", action="append", default=[])
    group = p.add_mutually_exclusive_group()
    group.add_argument("--register")
    group.add_argument("--register-once-after", type=float)
    p.add_argument("--instance")
    p.add_argument("--params", type=json.loads, default={})
    p.add_argument("--schedule-file")
    p.add_argument("--stop-file")
    p.add_argument("--seconds", type=float, default=120)
    args = p.parse_args()

    define_workflow(args.workflow, args.side_file, args.block_marker)
    config = cloaca.DefaultRunnerConfig(**config_fields(args.config, cron_poll_interval_seconds=0.2))
    with cloaca.DefaultRunner.with_config(args.url, config) as runner:
        expression = args.register
        if args.register_once_after is not None:
            expression = once_after(args.register_once_after)
        if expression is not None:
            if args.instance is not None:
                schedule_id = runner.register_workflow_instance(
                    args.workflow, args.instance, expression, "UTC", args.params
                )
            else:
                schedule_id = runner.register_cron_workflow(args.workflow, expression)
            write_atomically(args.schedule_file, schedule_id)
        write_atomically(args.ready_file, str(os.getpid()))
        deadline = time.monotonic() + args.seconds
        while not (args.stop_file and os.path.exists(args.stop_file)):
            if time.monotonic() > deadline:
                return 2
            time.sleep(0.05)
        return 0


if __name__ == "__main__":
    sys.exit(main())
