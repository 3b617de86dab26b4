"""The `cloaca` command line: executions, schedules, workflow graphs and the database, from a shell.

Run as the `cloaca` script or as `python -m cloaca`. Only those import this
package, so `import cloaca` does not pay for argparse and the commands.
"""

from cloaca.cli._app import main

__all__ = ["main"]
