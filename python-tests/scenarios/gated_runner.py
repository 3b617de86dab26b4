"""A runner of a three-task chain first -> gated -> last whose middle task
waits for a gate file; used to steer, restart and SIGKILL runs mid-task.

usage: gated_runner.py --url U --workflow W --side-file F --gate G
                       [--start ID_FILE] [--key KEY --barrier B --id-file ID_FILE] [--async-gate] [--rules]

Every task appends "<task_id> <pid>" to the side-effect file when it runs
(gated: when it starts, and again as "gated-done" when the gate opened, or
"gated-cancelled" when --async-gate made it a coroutine and it was cancelled).
--start: start one execution, write its id to ID_FILE, then serve until killed.
--key: wait for the barrier file, start with this idempotency key, write the
id to ID_FILE and exit (two processes racing one key).
Without either: serve until killed or until the file "<gate>.stop" exists.
--rules: `last` has the trigger rule "gated completed and first's key is set",
and a fourth task `fallback` after `gated` runs only when gated failed.
"""

import asyncio
import os
import time

import cloaca
from _scenario import record, runner_arguments, write_atomically


def declare(name: str, side_file: str, gate: str, use_async: bool, rules: bool = False) -> None:
    with cloaca.WorkflowBuilder(name):

        @cloaca.task(id="first")
        def first(ctx):
            record(side_file, "first")
            ctx.set("first", True)
            return ctx

        if use_async:

            @cloaca.task(id="gated", dependencies=["first"])
            async def gated(ctx):
                record(side_file, "gated")
                try:
                    while not os.path.exists(gate):
                        await asyncio.sleep(0.02)
                except asyncio.CancelledError:
                    record(side_file, "gated-cancelled")
                    raise
                record(side_file, "gated-done")
                ctx.set("gated", True)
                return ctx

        else:

            @cloaca.task(id="gated", dependencies=["first"])
            def gated(ctx):
                record(side_file, "gated")
                while not os.path.exists(gate):
                    time.sleep(0.02)
                record(side_file, "gated-done")
                ctx.set("gated", True)
                return ctx

        last_rule = (
            cloaca.all_of(cloaca.task_success("gated"), cloaca.context_value("first", "eq", True)) if rules else None
        )

        @cloaca.task(id="last", dependencies=["gated"], trigger_rules=last_rule)
        def last(ctx):
            record(side_file, "last")
            ctx.set("last", True)
            return ctx

        if rules:

            @cloaca.task(id="fallback", dependencies=["gated"], trigger_rules=cloaca.task_failed("gated"))
            def fallback(ctx):
                record(side_file, "fallback")
                return ctx


def main() -> None:
    parser = runner_arguments(__doc__)
    parser.add_argument("--gate", required=True)
    parser.add_argument("--start")
    parser.add_argument("--key")
    parser.add_argument("--barrier")
    parser.add_argument("--id-file")
    parser.add_argument("--async-gate", action="store_true", help="the gated task is a coroutine")
    parser.add_argument("--rules", action="store_true", help="last and fallback have trigger rules")
    args = parser.parse_args()
    declare(args.workflow, args.side_file, args.gate, args.async_gate, args.rules)
    config = cloaca.DefaultRunnerConfig(enable_cron_scheduling=False, task_lease_seconds=2)
    with cloaca.DefaultRunner.with_config(args.url, config) as runner:
        if args.key:
            while not os.path.exists(args.barrier):
                time.sleep(0.001)
            handle = runner.execute_async(args.workflow, {}, idempotency_key=args.key)
            write_atomically(args.id_file, handle.execution_id)
            return
        if args.start:
            handle = runner.execute_async(args.workflow, {})
            write_atomically(args.start, handle.execution_id)
        while not os.path.exists(args.gate + ".stop"):
            time.sleep(0.05)


if __name__ == "__main__":
    main()
