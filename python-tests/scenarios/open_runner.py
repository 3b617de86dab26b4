"""Try to open a DefaultRunner on a URL; report the outcome as JSON on stdout.

usage: open_runner.py DATABASE_URL

Used for storage errors that could block (an unreachable server): the test runs
this with a timeout instead of risking a hang in its own process.
Prints {"opened": true} or {"opened": false, "error_type", "is_value_error", "message"}.
"""

import json
import sys

import cloaca


def main() -> None:
    url = sys.argv[1]
    try:
        runner = cloaca.DefaultRunner(url)
    except BaseException as exc:  # reported to the test, which asserts on it
        print(
            json.dumps(
                {
                    "opened": False,
                    "error_type": type(exc).__name__,
                    "is_value_error": isinstance(exc, ValueError),
                    "message": str(exc),
                }
            )
        )
        return
    runner.shutdown()
    print(json.dumps({"opened": True}))


if __name__ == "__main__":
    main()
