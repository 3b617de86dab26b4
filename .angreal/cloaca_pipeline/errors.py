"""How the pipeline reports failure: one paragraph and a non-zero exit.

angreal turns an uncaught exception into exit status 56 and a terse dump; every
command body therefore runs under :func:`reported`, which prints the paragraph
of a :class:`PipelineError` (or of anything unexpected) and exits with a status
that says what kind of failure it was.
"""

from __future__ import annotations

import functools
import sys
import textwrap
import traceback

#: Exit statuses of the angreal cloaca commands.
EXIT_FAILED = 1  # something failed: tests, checks, a compile, a pip install
EXIT_BAD_INPUT = 2  # bad arguments, missing tools, unreachable database
EXIT_INTERNAL = 3  # a bug in the pipeline itself
EXIT_INTERRUPTED = 130


class PipelineError(Exception):
    """A failure the user can act on; the message says what is wrong and what to do."""

    exit_status = EXIT_BAD_INPUT


class ChecksFailed(PipelineError):
    """Something the command ran failed (tests, checks, a compile); its output says what."""

    exit_status = EXIT_FAILED


def print_paragraph(message: str, *, prefix: str = "cloaca: error: ") -> None:
    """Print `message` wrapped as one paragraph on stderr."""
    width = 100
    text = textwrap.fill(
        message,
        width=width,
        initial_indent=prefix,
        subsequent_indent=" " * len(prefix),
        break_on_hyphens=False,
        break_long_words=False,
    )
    print(text, file=sys.stderr, flush=True)


def reported(command):
    """Run an angreal command body, turning failures into a paragraph and an exit status."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            command(*args, **kwargs)
        except PipelineError as exc:
            print_paragraph(str(exc))
            raise SystemExit(exc.exit_status) from None
        except KeyboardInterrupt:
            print_paragraph("interrupted.")
            raise SystemExit(EXIT_INTERRUPTED) from None
        except Exception:  # the one place that must catch everything
            print(traceback.format_exc(), file=sys.stderr)
            print_paragraph(
                "the pipeline itself failed unexpectedly (traceback above). This is a bug "
                "in .angreal/; please report it with the command you ran."
            )
            raise SystemExit(EXIT_INTERNAL) from None

    return run
