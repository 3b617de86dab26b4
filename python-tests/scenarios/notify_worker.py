"""An idle runner process that only a NOTIFY can wake (scale-out wake-up test).

usage: notify_worker.py URL WORKFLOW READY_FILE DONE_FILE

Registers WORKFLOW (one task, "remote", which puts this process's pid in the
context), opens a runner whose fallback poll interval is one minute, writes
READY_FILE and serves until DONE_FILE exists (at most 60 s).
"""

import os
import sys
import time
from pathlib import Path

import cloaca


def define_workflow(name: str) -> None:
    with cloaca.WorkflowBuilder(name) as builder:
        builder.description("woken by NOTIFY")

        @cloaca.task(id="remote")
        def remote(ctx):
            ctx["ran_in"] = os.getpid()
            return ctx


def main(url: str, workflow: str, ready_file: str, done_file: str) -> int:
    define_workflow(workflow)
    config = cloaca.DefaultRunnerConfig(executor_poll_interval_ms=60_000)
    with cloaca.DefaultRunner.with_config(url, config):
        Path(ready_file).write_text(str(os.getpid()))
        deadline = time.monotonic() + 60
        while not Path(done_file).exists():
            if time.monotonic() > deadline:
                return 2
            time.sleep(0.05)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
