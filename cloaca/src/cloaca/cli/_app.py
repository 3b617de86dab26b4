"""The `cloaca` command: its parser, its commands, and how errors become one line and an exit status."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import cloaca
from cloaca.cli import _output as out

#: Where the database URL comes from when --database is not given.
DATABASE_ENV = "CLOACA_DATABASE_URL"
#: Every execution status `executions list --status` accepts (the engine checks it too).
EXECUTION_STATUSES = ("Pending", "Running", "Paused", "Completed", "Failed", "Cancelled")
GRAPH_FORMATS = ("mermaid", "dot")

EXIT_OK = 0
#: Something the command asked for could not be done: not found, refused, the database unreachable.
EXIT_FAILED = 1
#: The command line itself is wrong: argparse's own status for usage errors.
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# An operator's command should fail within seconds when the database is down,
# not wait out the runner's default minute meant for long-running workers.
OUTAGE_WAIT_SECONDS = 10.0
# list_cron_schedules pages; `schedules list` shows them all, this many per call.
SCHEDULE_PAGE = 500
# The last column: enough for the engine's "Task ... failed after N attempt(s): Type: message" line.
ERROR_WIDTH = 100


class CliError(Exception):
    """An error the command reports as one line on stderr, exiting with `status`."""

    def __init__(self, message: str, status: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors raised as one-line CliErrors instead of usage text and an exit."""

    #: The names of this parser's sub-commands, when it is a group (set by build_parser).
    command_names: tuple[str, ...] = ()

    def error(self, message: str) -> NoReturn:
        """Raise the usage error as a CliError pointing at this command's --help."""
        if self.command_names and "required: COMMAND" in message:
            message = f"missing command: choose one of {', '.join(self.command_names)}"
        raise CliError(f"{message} (see '{self.prog} --help')", EXIT_USAGE)


# ---------------------------------------------------------------------------
# The database and the API.
# ---------------------------------------------------------------------------


def database_url(args: argparse.Namespace) -> str:
    """The URL of --database, else of CLOACA_DATABASE_URL; a usage error when neither is set."""
    url = args.database or os.environ.get(DATABASE_ENV)
    if not url:
        raise CliError(f"no database given: pass --database URL or set {DATABASE_ENV}", EXIT_USAGE)
    return url


def refuse_missing_sqlite_file(url: str) -> None:
    """Refuse a SQLite URL whose file does not exist.

    Opening a runner creates a missing file; for an inspection tool a mistyped
    path would then show an empty, new database instead of an error. An explicit
    `mode=` in the URL is left to the engine, and so is a SQLite URL on the
    postgres backend, which refuses it with a message naming the backend.
    """
    if not url.startswith("sqlite://") or cloaca.get_backend() != "sqlite":
        return
    rest, _, query = url[len("sqlite://") :].partition("?")
    if rest in ("", ":memory:") or "mode=" in query:
        return
    path = "/" + rest.lstrip("/") if rest.startswith("/") else rest
    if not os.path.exists(path):
        raise CliError(f"no SQLite database at {path} (cloaca creates one only when a runner first opens it)")


@contextmanager
def open_runner(args: argparse.Namespace) -> Iterator[Any]:
    """A runner on the command's database that does no work of its own, shut down on leaving."""
    url = database_url(args)
    refuse_missing_sqlite_file(url)
    config = cloaca.DefaultRunnerConfig(
        # The command reads and changes state; it must not start ticks, take over
        # other runners' expired tasks or prune history as a side effect.
        enable_cron_scheduling=False,
        enable_recovery=False,
        cron_enable_recovery=False,
        execution_retention_days=None,
        max_concurrent_tasks=1,
        database_outage_timeout_seconds=OUTAGE_WAIT_SECONDS,
    )
    runner = cloaca.DefaultRunner.with_config(url, config)
    try:
        yield runner
    finally:
        runner.shutdown()


def api(owner: Any, name: str, where: str) -> Callable[..., Any]:
    """The method `name` of `owner`, or a CliError saying the installed cloaca lacks it.

    Looked up before the call, so an AttributeError raised inside the method is
    not mistaken for a missing method.
    """
    method = getattr(owner, name, None)
    if method is None:
        raise CliError(
            f"this cloaca ({cloaca.__version__}, {cloaca.get_backend()} backend) has no {where}.{name}(); "
            "upgrade cloaca to use this command"
        )
    return method


# ---------------------------------------------------------------------------
# executions
# ---------------------------------------------------------------------------


def execution_record(result: Any) -> dict[str, Any]:
    """The JSON of one execution, without its context (as `executions list` prints it)."""
    return {
        "execution_id": result.execution_id,
        "workflow_name": result.workflow_name,
        "status": result.status,
        "start_time": result.start_time,
        "end_time": result.end_time,
        "error_message": result.error_message,
    }


def executions_list(args: argparse.Namespace) -> None:
    """`executions list`: the newest executions, filtered."""
    with open_runner(args) as runner:
        results = runner.list_executions(workflow_name=args.workflow, status=args.status, limit=args.limit)
    out.listing(
        [execution_record(r) for r in results],
        args.json,
        "no executions",
        ("ID", "WORKFLOW", "STATUS", "STARTED", "FINISHED", "ERROR"),
        lambda r: (
            r["execution_id"],
            r["workflow_name"],
            r["status"],
            out.short_time(r["start_time"]),
            out.short_time(r["end_time"]),
            out.truncate(out.cell(r["error_message"]), ERROR_WIDTH),
        ),
    )


def task_row(task: Any) -> tuple[Any, ...]:
    """One line of the task table of `executions show`."""
    error = None
    if task.error_type or task.error_message:
        error = ": ".join(part for part in (task.error_type, out.cell(task.error_message)) if part)
    # A skipped task says why (a rule, a failed dependency, a stopped run).
    reason = task.skip_reason
    return (
        task.task_id,
        f"{task.status} ({reason})" if reason else task.status,
        task.attempts,
        out.short_time(task.started_at),
        out.short_time(task.finished_at),
        out.duration(task.duration_ms),
        task.next_retry_at and out.short_time(task.next_retry_at),
        task.runner,
        error and out.truncate(error, ERROR_WIDTH),
    )


def event_row(event: Any) -> tuple[Any, ...]:
    """One line of the event table of `executions show`."""
    return (out.short_time(event.time), event.kind, event.task_id, event.attempt, event.runner, event.detail)


def executions_show(args: argparse.Namespace) -> None:
    """`executions show`: one execution, its tasks and its events."""
    with open_runner(args) as runner:
        result = runner.get_execution(args.id)
        tasks = api(runner, "get_execution_tasks", "DefaultRunner")(args.id)
        events = api(runner, "get_execution_events", "DefaultRunner")(args.id)
    if args.json:
        execution = execution_record(result)
        execution["context"] = result.final_context.to_dict()
        out.emit_json(
            {"execution": execution, "tasks": [t.to_dict() for t in tasks], "events": [e.to_dict() for e in events]}
        )
        return
    sections = [
        out.fields(
            [
                ("execution", result.execution_id),
                ("workflow", result.workflow_name),
                ("status", result.status),
                ("started", result.start_time),
                ("finished", result.end_time),
                ("error", result.error_message),
            ]
        ),
        "TASKS\n"
        + (
            out.table(
                ("TASK", "STATUS", "ATTEMPTS", "STARTED", "FINISHED", "DURATION", "NEXT RETRY", "RUNNER", "ERROR"),
                [task_row(t) for t in tasks],
                right=("ATTEMPTS", "DURATION"),
            )
            if tasks
            else "no tasks"
        ),
        "EVENTS\n"
        + (
            out.table(
                ("TIME", "EVENT", "TASK", "ATTEMPT", "RUNNER", "DETAIL"),
                [event_row(e) for e in events],
                right=("ATTEMPT",),
            )
            if events
            else "no events"
        ),
    ]
    # The table cells show an error's first line; the execution's whole message
    # (the failed task's traceback) is what an operator opens `show` for.
    if result.error_message and "\n" in result.error_message.strip():
        sections.append("ERROR\n" + result.error_message.rstrip())
    out.emit("\n\n".join(sections))


#: The control commands: the runner method each calls and the past tense it reports.
CONTROL_ACTIONS = {
    "cancel": ("cancel_execution", "cancelled"),
    "pause": ("pause_execution", "paused"),
    "resume": ("resume_execution", "resumed"),
    # retry_execution returns a handle on the same execution, which runs again in place.
    "retry": ("retry_execution", "retried"),
}


def executions_control(args: argparse.Namespace) -> None:
    """`executions cancel|pause|resume|retry`: change an execution's state, then report its status."""
    method, done = CONTROL_ACTIONS[args.command]
    with open_runner(args) as runner:
        api(runner, method, "DefaultRunner")(args.id)
        status = runner.get_execution(args.id).status
    if args.json:
        out.emit_json({"execution_id": args.id, "action": args.command, "status": status})
    else:
        out.emit(f"{done} execution {args.id} (status {status})")


def executions_graph(args: argparse.Namespace) -> None:
    """`executions graph`: an execution's task graph, each task coloured by its state."""
    with open_runner(args) as runner:
        text = api(runner, "render_execution", "DefaultRunner")(args.id, format=args.format)
    if args.json:
        out.emit_json({"execution_id": args.id, "format": args.format, "graph": text})
    else:
        out.emit(text.rstrip("\n"))


# ---------------------------------------------------------------------------
# schedules
# ---------------------------------------------------------------------------


def schedules_list(args: argparse.Namespace) -> None:
    """`schedules list`: every cron schedule, oldest first."""
    schedules: list[dict[str, Any]] = []
    with open_runner(args) as runner:
        while True:
            page = runner.list_cron_schedules(limit=SCHEDULE_PAGE, offset=len(schedules))
            schedules.extend(page)
            if len(page) < SCHEDULE_PAGE:
                break
    out.listing(
        schedules,
        args.json,
        "no schedules",
        ("ID", "WORKFLOW", "EXPRESSION", "TIMEZONE", "ENABLED", "NEXT RUN", "LAST RUN"),
        lambda s: (
            s["id"],
            s["workflow_name"],
            s["cron_expression"],
            s["timezone"],
            s["enabled"],
            out.short_time(s["next_run_at"]),
            out.short_time(s["last_run_at"]),
        ),
    )


def schedules_set_enabled(args: argparse.Namespace) -> None:
    """`schedules enable|disable`: switch a schedule on or off."""
    enabled = args.command == "enable"
    with open_runner(args) as runner:
        runner.set_cron_schedule_enabled(args.id, enabled)
        schedule = runner.get_cron_schedule(args.id)
    if args.json:
        out.emit_json(
            {
                "schedule_id": args.id,
                "action": args.command,
                "enabled": schedule["enabled"],
                "next_run_at": schedule["next_run_at"],
            }
        )
    elif enabled:
        out.emit(f"enabled schedule {args.id} (next run {out.short_time(schedule['next_run_at'])})")
    else:
        out.emit(f"disabled schedule {args.id}")


def schedules_delete(args: argparse.Namespace) -> None:
    """`schedules delete`: remove a schedule and its history."""
    with open_runner(args) as runner:
        runner.delete_cron_schedule(args.id)
    if args.json:
        out.emit_json({"schedule_id": args.id, "action": "delete"})
    else:
        out.emit(f"deleted schedule {args.id}")


# ---------------------------------------------------------------------------
# workflows
# ---------------------------------------------------------------------------


def resolve_workflow(spec: str) -> Any:
    """The cloaca.Workflow that MODULE:NAME names: the attribute itself, or what calling it returns."""
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute:
        raise CliError(f"{spec!r} is not MODULE:NAME (such as myapp.flows:etl)", EXIT_USAGE)
    # As `python -m` does, so a module beside the operator is found from the installed script too.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise CliError(f"no module named {exc.name!r} (looked in the current directory and sys.path)") from None
        raise CliError(f"importing {module_name} failed: ModuleNotFoundError: {exc}") from None
    except Exception as exc:
        raise CliError(f"importing {module_name} failed: {type(exc).__name__}: {exc}") from None
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise CliError(f"{module_name} has no attribute {attribute!r}") from None
    if isinstance(target, cloaca.Workflow):
        return target
    # A module that declares its workflow in a `with WorkflowBuilder(...) as builder:`
    # block at the top level leaves only the builder behind; it builds the same DAG.
    if isinstance(target, cloaca.WorkflowBuilder):
        return target.build()
    if not callable(target):
        raise CliError(
            f"{spec} is of type {type(target).__name__}, not a cloaca.Workflow, a WorkflowBuilder "
            "or a function returning a Workflow"
        )
    try:
        made = target()
    except Exception as exc:
        raise CliError(f"calling {spec}() failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(made, cloaca.Workflow):
        raise CliError(f"{spec}() returned a value of type {type(made).__name__}, not a cloaca.Workflow")
    return made


def workflows_graph(args: argparse.Namespace) -> None:
    """`workflows graph`: a workflow's DAG as Mermaid or Graphviz text."""
    workflow = resolve_workflow(args.workflow)
    text = api(workflow, "to_mermaid" if args.format == "mermaid" else "to_dot", "Workflow")()
    if args.json:
        out.emit_json({"workflow": workflow.name, "format": args.format, "graph": text})
    else:
        out.emit(text.rstrip("\n"))


# ---------------------------------------------------------------------------
# db
# ---------------------------------------------------------------------------


def db_info(args: argparse.Namespace) -> None:
    """`db info`: what the database is and how much it holds."""
    with open_runner(args) as runner:
        info = api(runner, "get_database_info", "DefaultRunner")()
    if args.json:
        out.emit_json({"cloaca_version": cloaca.__version__, **info})
        return
    executions = info.get("executions") or {}
    pairs: list[tuple[str, Any]] = [
        ("backend", info.get("backend")),
        ("database", info.get("database")),
        ("schema version", info.get("schema_version")),
        ("cloaca version", cloaca.__version__),
        ("executions", sum(executions.values())),
    ]
    pairs += [(f"  {status}", count) for status, count in executions.items()]
    pairs += [("task executions", info.get("task_executions")), ("cron schedules", info.get("cron_schedules"))]
    out.emit(out.fields(pairs))


# ---------------------------------------------------------------------------
# The parser.
# ---------------------------------------------------------------------------


def positive_int(text: str) -> int:
    """An argparse type: a whole number of 1 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is below 1")
    return value


def execution_status(text: str) -> str:
    """An argparse type: an execution status, in any letter case."""
    for status in EXECUTION_STATUSES:
        if status.lower() == text.lower():
            return status
    raise argparse.ArgumentTypeError(f"unknown status {text!r}; choose from {', '.join(EXECUTION_STATUSES)}")


def global_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """--database and --json, on the top-level parser and again on every command.

    On the commands their default is SUPPRESS, so `cloaca --json executions list`
    and `cloaca executions list --json` both work and neither hides the other.
    """
    unset: dict[str, Any] = {} if defaults else {"default": argparse.SUPPRESS}
    parser.add_argument(
        "--database",
        metavar="URL",
        help=f"database URL (default: ${DATABASE_ENV}), such as sqlite:///var/lib/app/cloaca.db "
        "or postgresql://user:pass@host/db",
        **({"default": None} if defaults else unset),
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print JSON for scripts instead of tables",
        **({"default": False} if defaults else unset),
    )


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: groups, commands, their arguments and handlers."""
    parser = _Parser(
        prog="cloaca",
        description="Inspect and operate cloaca executions, schedules, workflows and databases.",
        epilog=f"The database is --database URL or ${DATABASE_ENV}. Exit status: 0 done, 1 the command failed "
        "(not found, refused, database unreachable), 2 bad usage.",
        allow_abbrev=False,
    )
    parser.add_argument(
        "--version", action="version", version=f"cloaca {cloaca.__version__} ({cloaca.get_backend()} backend)"
    )
    global_options(parser, defaults=True)
    groups = parser.add_subparsers(dest="group", metavar="COMMAND", required=True, parser_class=_Parser)

    # (group parser, its commands): their names are known once every command is added.
    group_parsers: list[tuple[_Parser, argparse._SubParsersAction]] = [(parser, groups)]

    def group(name: str, help_text: str) -> argparse._SubParsersAction:
        sub = groups.add_parser(name, help=help_text, description=help_text, allow_abbrev=False)
        commands = sub.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)
        group_parsers.append((sub, commands))
        return commands

    def command(
        commands: argparse._SubParsersAction, name: str, help_text: str, handler: Callable[..., None]
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text, allow_abbrev=False)
        global_options(sub, defaults=False)
        sub.set_defaults(handler=handler)
        return sub

    executions = group("executions", "list, show and control executions")
    listing = command(executions, "list", "list executions, newest first", executions_list)
    listing.add_argument("--workflow", metavar="W", help="only executions of workflow W")
    listing.add_argument(
        "--status",
        metavar="S",
        type=execution_status,
        help=f"only executions in status S: {', '.join(EXECUTION_STATUSES)}",
    )
    listing.add_argument("--limit", metavar="N", type=positive_int, default=100, help="at most N (default: 100)")
    show = command(executions, "show", "show an execution, its tasks and its events", executions_show)
    show.add_argument("id", metavar="ID", help="the execution's id")
    for action, help_text in (
        ("cancel", "cancel an unfinished execution: no task of it starts afterwards"),
        ("pause", "pause an unfinished execution: running tasks finish, no new task starts"),
        ("resume", "resume a paused execution"),
        ("retry", "run a failed or cancelled execution again from where it stopped"),
    ):
        control = command(executions, action, help_text, executions_control)
        control.add_argument("id", metavar="ID", help="the execution's id")
    picture = command(
        executions, "graph", "print an execution's task graph, each task coloured by its state", executions_graph
    )
    picture.add_argument("id", metavar="ID", help="the execution's id")
    picture.add_argument("--format", choices=GRAPH_FORMATS, default="mermaid", help="mermaid (default) or dot")

    schedules = group("schedules", "list, enable, disable and delete cron schedules")
    command(schedules, "list", "list every cron schedule, oldest first", schedules_list)
    for action, help_text, handler in (
        ("enable", "enable a schedule: it runs from its next tick after now", schedules_set_enabled),
        ("disable", "disable a schedule: no tick starts until it is enabled", schedules_set_enabled),
        ("delete", "delete a schedule and its history (executions it started go on)", schedules_delete),
    ):
        sub = command(schedules, action, help_text, handler)
        sub.add_argument("id", metavar="ID", help="the schedule's id")

    workflows = group("workflows", "look at workflow definitions")
    graph = command(workflows, "graph", "print a workflow's task graph (needs no database)", workflows_graph)
    graph.add_argument(
        "workflow",
        metavar="MODULE:NAME",
        help="a cloaca.Workflow, or a function of no arguments returning one, in an importable module "
        "(the current directory is searched first)",
    )
    graph.add_argument("--format", choices=GRAPH_FORMATS, default="mermaid", help="mermaid (default) or dot")

    db = group("db", "look at the database")
    command(db, "info", "show the backend, schema version and row counts", db_info)

    for group_parser, commands in group_parsers:
        group_parser.command_names = tuple(commands.choices)
    return parser


# ---------------------------------------------------------------------------
# Running a command.
# ---------------------------------------------------------------------------


def one_line(text: str) -> str:
    """`text` on a single line: engine messages may carry a traceback or a cause on further lines."""
    return " ".join(line.strip() for line in text.splitlines() if line.strip()) or "(no message)"


def failure(exc: BaseException) -> CliError:
    """The CliError to report for an exception a command raised."""
    if isinstance(exc, CliError):
        return exc
    # KeyError's str() is the repr of its argument: quote marks around the engine's message.
    message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    if isinstance(exc, cloaca.InvalidUrlError):
        return CliError(message, EXIT_USAGE)
    if isinstance(exc, (cloaca.CloacaError, ValueError, KeyError)):
        return CliError(message)
    return CliError(f"{type(exc).__name__}: {message}")


def main(argv: list[str] | None = None) -> int:
    """Run the cloaca command line on `argv` (default: sys.argv[1:]); returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
        args.handler(args)
        sys.stdout.flush()
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader (`| head`) went away: what was left to print is not wanted, and
        # Python's flush at exit would otherwise complain about the closed pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except Exception as exc:
        error = failure(exc)
        sys.stderr.write(f"cloaca: error: {one_line(error.message)}\n")
        return error.status
    return EXIT_OK
