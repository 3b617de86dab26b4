"""A runner process with event triggers (trigger tests).

The workflow, one task "run": appends "run <trigger_name> <pid> <input as JSON>"
to the side-effect file; while the --block-marker file exists it waits (so
that its execution stays Running); then sets ctx["ran_in"] = pid.

Each --trigger JSON object defines one trigger on that workflow (unless it
names its own "on", or "on": null for none):
    {"name": N, "mode": M, "poll_interval": "100ms", "allow_concurrent": false}
Every poll appends "poll <name> <pid> <start_ms> <end_ms>" to --poll-file and
returns, by mode: "fire_unique" fire({"n": <uuid>}), "fire_same"
fire({"file": "same.csv"}), "fire_dict" fire({"trigger_name": "mine", "x": 1})
(a dict; the trigger's own keys override), "fire_none" fire(), "true" True,
"skip" skip(), "raise" raises RuntimeError, "none" None (a poll error).
--cron NAME=EXPR defines a cron-form trigger on the workflow; --define-later JSON
defines one more trigger 0.5 s after the runner opened and writes the time it
did so (unix ms) to --defined-file.

usage: trigger_worker.py --url URL --workflow NAME --side-file F --poll-file P
                         --ready-file R [--trigger JSON ...] [--cron NAME=EXPR ...]
                         [--block-marker M] [--config FIELD=JSON ...]
                         [--stop-file S] [--seconds N]

Opens a runner with DefaultRunnerConfig(**fields) (fields from --config), writes
its pid to the ready file and serves until the stop file exists (exit 0) or
--seconds pass (exit 2).
"""

import json
import logging
import os
import sys
import time
import uuid

import cloaca
from _scenario import append_line, config_fields, runner_arguments, write_atomically


def define_workflow(name: str, side_file: str, block_marker) -> None:
    with cloaca.WorkflowBuilder(name) as builder:
        builder.description("trigger scenario: one task that records the input it ran with")

        @cloaca.task(id="run")
        def run(ctx):
            append_line(
                side_file, f"run {ctx.get('trigger_name')} {os.getpid()} {json.dumps(ctx.to_dict(), sort_keys=True)}"
            )
            deadline = time.monotonic() + 600
            while block_marker and os.path.exists(block_marker) and time.monotonic() < deadline:
                time.sleep(0.02)
            ctx.set("ran_in", os.getpid())
            return ctx


def result_of(mode: str):
    if mode == "fire_unique":
        return cloaca.TriggerResult.fire(cloaca.Context({"n": uuid.uuid4().hex}))
    if mode == "fire_same":
        return cloaca.TriggerResult.fire(cloaca.Context({"file": "same.csv"}))
    if mode == "fire_dict":
        return cloaca.TriggerResult.fire({"trigger_name": "mine", "x": 1})
    if mode == "fire_none":
        return cloaca.TriggerResult.fire()
    if mode == "true":
        return True
    if mode == "skip":
        return cloaca.TriggerResult.skip()
    if mode == "raise":
        raise RuntimeError("the poll failed on purpose")
    if mode == "none":
        return None
    raise SystemExit(f"unknown mode {mode!r}")


def define_trigger(spec: dict, workflow: str, poll_file: str) -> None:
    name, mode = spec["name"], spec["mode"]

    def poll():
        start = time.time()
        try:
            return result_of(mode)
        finally:
            append_line(poll_file, f"poll {name} {os.getpid()} {int(start * 1000)} {int(time.time() * 1000)}")

    on = spec.get("on", workflow)
    cloaca.trigger(
        name=name,
        on=on,
        poll_interval=spec.get("poll_interval", "100ms"),
        allow_concurrent=spec.get("allow_concurrent", False),
    )(poll)


def main() -> int:
    p = runner_arguments("A runner process with event triggers.")
    p.add_argument("--poll-file", required=True)
    p.add_argument("--ready-file", required=True)
    p.add_argument("--trigger", action="append", default=[])
    p.add_argument("--cron", action="append", default=[])
    p.add_argument("--define-later", help="a --trigger JSON defined 0.5 s after the runner opened")
    p.add_argument("--defined-file", help="where the time (unix ms) of that definition is written")
    p.add_argument("--block-marker")
    p.add_argument("--config", action="append", default=[])
    p.add_argument("--stop-file")
    p.add_argument("--seconds", type=float, default=120)
    args = p.parse_args()
    # The runner's reports (poll errors among them) go to stderr, where the tests read them.
    logging.basicConfig(level=logging.WARNING)

    define_workflow(args.workflow, args.side_file, args.block_marker)
    for spec in args.trigger:
        define_trigger(json.loads(spec), args.workflow, args.poll_file)
    for item in args.cron:
        name, _, expression = item.partition("=")
        cloaca.trigger(name=name, on=args.workflow, cron=expression)(lambda: True)
    config = cloaca.DefaultRunnerConfig(**config_fields(args.config))
    with cloaca.DefaultRunner.with_config(args.url, config):
        write_atomically(args.ready_file, str(os.getpid()))
        if args.define_later:
            time.sleep(0.5)
            define_trigger(json.loads(args.define_later), args.workflow, args.poll_file)
            write_atomically(args.defined_file, str(int(time.time() * 1000)))
        deadline = time.monotonic() + args.seconds
        while not (args.stop_file and os.path.exists(args.stop_file)):
            if time.monotonic() > deadline:
                return 2
            time.sleep(0.05)
        return 0


if __name__ == "__main__":
    sys.exit(main())
