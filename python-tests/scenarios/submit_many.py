"""Submits many executions with execute_async in a loop and waits for all of them (backpressure).

usage: submit_many.py --url URL --workflow NAME --count N

The handles are dropped as soon as they are made: the submitting process keeps
nothing per execution, and neither may the engine. Prints JSON: count, how many
completed, and the process's resident memory (from /proc/self/status, in KiB)
after the first tenth of the submissions, after all of them, and at its peak
while they ran (before the final count, which loads every record).
"""

import argparse
import json
import time

import cloaca


def rss_kib(field: str = "VmRSS") -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} is not in /proc/self/status")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--url", required=True)
    p.add_argument("--workflow", required=True)
    p.add_argument("--count", type=int, required=True)
    args = p.parse_args()

    with cloaca.WorkflowBuilder(args.workflow):

        @cloaca.task()
        def noop(ctx):
            return ctx

    config = cloaca.DefaultRunnerConfig(enable_cron_scheduling=False)
    with cloaca.DefaultRunner.with_config(args.url, config) as runner:
        started = time.monotonic()
        after_tenth = None
        for i in range(args.count):
            runner.execute_async(args.workflow, {"i": i})
            if i + 1 == max(1, args.count // 10):
                after_tenth = rss_kib()
        after_all = rss_kib()
        submitted_in = time.monotonic() - started
        while runner.list_executions(status="Pending", limit=1) or runner.list_executions(status="Running", limit=1):
            time.sleep(0.5)
        finished_in = time.monotonic() - started
        # The peak of submitting and running, before the count below loads every record.
        peak = rss_kib("VmHWM")
        completed = len(runner.list_executions(workflow_name=args.workflow, status="Completed", limit=args.count + 1))
    print(
        json.dumps(
            {
                "count": args.count,
                "completed": completed,
                "rss_kib_after_a_tenth": after_tenth,
                "rss_kib_after_all": after_all,
                "peak_rss_kib": peak,
                "submitted_seconds": round(submitted_in, 2),
                "finished_seconds": round(finished_in, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
