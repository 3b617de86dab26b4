"""A runner process for the callback durability test.

The workflow has one task, "charge", with an on_success callback. Both append
"<what> <pid>" to the side-effect file ("body", then "on_success").

Modes:
  start   execute_async(workflow), write the execution id to --result-file, then
          wait to be killed. With --hang-in-callback, on_success hangs after
          writing its line, so the test can SIGKILL the process after the callback
          ran but before the completion was committed.
  resume  poll get_execution(--execution-id) until it is finished and write its
          result as JSON to --result-file.

The callback is not part of the workflow's version, so both modes register the
same version whatever --hang-in-callback says.
"""

import os
import sys
import time

import cloaca
from _scenario import append_line, result_dict, runner_arguments, wait_finished, write_atomically, write_json


def define_workflow(name: str, side_file: str, hang_in_callback: bool) -> None:
    def on_success(task_id, ctx):
        append_line(side_file, f"on_success {os.getpid()}")
        if hang_in_callback:
            time.sleep(3600)

    with cloaca.WorkflowBuilder(name):

        @cloaca.task(id="charge", on_success=on_success)
        def charge(ctx):
            append_line(side_file, f"body {os.getpid()}")
            ctx.set("charged", True)
            return ctx


def main() -> int:
    p = runner_arguments("A runner process to kill inside an on_success callback.")
    p.add_argument("--mode", choices=("start", "resume"), required=True)
    p.add_argument("--hang-in-callback", action="store_true")
    p.add_argument("--execution-id")
    p.add_argument("--result-file", required=True)
    p.add_argument("--lease", type=int, default=2)
    args = p.parse_args()

    define_workflow(args.workflow, args.side_file, args.hang_in_callback)
    config = cloaca.DefaultRunnerConfig(task_lease_seconds=args.lease, enable_cron_scheduling=False)
    with cloaca.DefaultRunner.with_config(args.url, config) as runner:
        if args.mode == "start":
            handle = runner.execute_async(args.workflow)
            write_atomically(args.result_file, handle.execution_id)
            time.sleep(600)  # the test kills this process long before
            return 3
        result = wait_finished(runner, args.execution_id, 120)
        write_json(args.result_file, result_dict(result))
        return 0 if result.status == "Completed" else 2


if __name__ == "__main__":
    sys.exit(main())
