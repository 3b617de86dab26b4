"""Print one execution, as seen by a runner in a separate process, as JSON.

usage: show_execution.py DATABASE_URL EXECUTION_ID

No workflow is registered here: reading an execution must not need one.
Prints {"result": {...}} or {"error_type": ..., "is_key_error": ..., "message": ...} (exit 0 either way).
"""

import json
import sys

import cloaca
from _scenario import result_dict


def main() -> None:
    url, execution_id = sys.argv[1], sys.argv[2]
    with cloaca.DefaultRunner(url) as runner:
        try:
            out = {"result": result_dict(runner.get_execution(execution_id))}
        except Exception as exc:  # reported to the test, which asserts on it
            out = {"error_type": type(exc).__name__, "is_key_error": isinstance(exc, KeyError), "message": str(exc)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
