"""Helpers shared by the scenario scripts (run as `python scenarios/<script>.py ...`).

The scripts are started by the tests in their own processes so that a runner can
be SIGKILLed mid-task, or several runners can share one database. They talk to
the test through files (side-effect lines, markers, JSON results), never pipes.
"""

import argparse
import json
import os
import time

FINISHED = ("Completed", "Failed")


def runner_arguments(description: str) -> argparse.ArgumentParser:
    """A parser with what every runner script takes: the database URL, the
    workflow name and the side-effect file the tasks write to."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--url", required=True)
    parser.add_argument("--workflow", required=True)
    parser.add_argument("--side-file", required=True)
    return parser


def config_fields(items, **defaults) -> dict:
    """DefaultRunnerConfig fields from --config FIELD=JSON options, over `defaults`."""
    fields = dict(defaults)
    for item in items:
        name, _, value = item.partition("=")
        fields[name] = json.loads(value)
    return fields


def append_line(path: str, line: str) -> None:
    """Append one line with a single O_APPEND write (atomic between processes)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def record(side_file: str, task_id: str) -> None:
    """The side effect every scenario task leaves: "<task_id> <pid>"."""
    append_line(side_file, f"{task_id} {os.getpid()}")


def write_atomically(path: str, text: str) -> None:
    """Write `text` to `path` so a reader never sees a partial file."""
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def result_dict(result) -> dict:
    """A PipelineResult as plain JSON data."""
    return {
        "status": result.status,
        "final_context": result.final_context.to_dict(),
        "error_message": result.error_message,
        "execution_id": result.execution_id,
        "workflow_name": result.workflow_name,
        "start_time": result.start_time,
        "end_time": result.end_time,
    }


def write_json(path: str, data) -> None:
    write_atomically(path, json.dumps(data))


def wait_finished(runner, execution_id: str, seconds: float):
    """Poll get_execution until the execution is finished; the last result either way."""
    deadline = time.monotonic() + seconds
    while True:
        result = runner.get_execution(execution_id)
        if result.status in FINISHED or time.monotonic() > deadline:
            return result
        time.sleep(0.1)
