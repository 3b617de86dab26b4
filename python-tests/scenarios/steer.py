"""Steer an execution from a process of its own, with no workflow registered.

usage: steer.py DATABASE_URL ACTION EXECUTION_ID   (ACTION: cancel, pause, resume, retry)

Prints {"ok": true} or {"ok": false, "error_type", "message"} as JSON.
"""

import json
import sys

import cloaca


def main() -> None:
    url, action, execution_id = sys.argv[1:4]
    config = cloaca.DefaultRunnerConfig(enable_cron_scheduling=False)
    with cloaca.DefaultRunner.with_config(url, config) as runner:
        try:
            getattr(runner, f"{action}_execution")(execution_id)
        except cloaca.CloacaError as exc:  # reported to the test, which asserts on it
            print(json.dumps({"ok": False, "error_type": type(exc).__name__, "message": str(exc)}))
            return
    print(json.dumps({"ok": True}))


if __name__ == "__main__":
    main()
