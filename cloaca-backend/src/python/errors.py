"""The exceptions cloaca raises, defined once and registered on the extension module.

Every class derives from CloacaError and from the builtin exception the API
raised for the same failure before the hierarchy existed, so programs that
catch ``ValueError``, ``KeyError`` and the like keep working.
"""


class CloacaError(Exception):
    """Root of the errors cloaca raises about databases, workflows, executions, schedules, settings and tenants.

    Catch it to handle all of them.
    """


class InvalidUrlError(CloacaError, ValueError):
    """A database URL the installed backend cannot use: malformed, for the other backend, or with an unknown option."""


class DatabaseUnavailableError(CloacaError, ConnectionError, ValueError):
    """The database cannot be opened or reached.

    For example a missing directory, a read-only or non-database file, or a server that refuses connections.
    """


class SchemaVersionError(CloacaError, ValueError):
    """The database holds a schema written by a newer cloaca; upgrade cloaca to use it."""


class DatabaseError(CloacaError, RuntimeError):
    """A statement failed on an open database in mid-operation (not the caller's input)."""


class InvalidWorkflowError(CloacaError, ValueError):
    """A workflow definition that cannot run: a cycle, an unknown dependency, an empty workflow."""


class ConfigurationError(CloacaError, ValueError):
    """A runner setting outside its accepted range (a value of the wrong type raises TypeError)."""


class WorkflowNotFoundError(CloacaError, ValueError):
    """A call named a workflow that is not registered in this process."""


class ExecutionNotFoundError(CloacaError, KeyError):
    """No execution with the given id exists in the database."""


class ExecutionStateError(CloacaError, ValueError):
    """The execution's state refuses the request; nothing was changed.

    For example cancelling or pausing a finished execution, resuming one that is not paused, or retrying one that
    is not Failed or Cancelled. The message names the execution and its status.
    """


class IdempotencyKeyError(CloacaError, ValueError):
    """An idempotency key that already started an execution of another workflow; nothing was started."""


class WaitTimeoutError(CloacaError, TimeoutError):
    """Waiting for an execution passed its timeout; the execution goes on and can be waited for again."""


class InvalidScheduleError(CloacaError, ValueError):
    """A cron expression or time zone that cannot be scheduled."""


class ScheduleNotFoundError(CloacaError, KeyError, ValueError):
    """No cron schedule with the given id exists in the database, or the id is not a schedule id at all.

    A ValueError too, as the original bindings raise for these.
    """


class TenantError(CloacaError, ValueError):
    """A tenant's schema name, role name, password or request that is refused; nothing was changed."""


class RunnerShutDownError(CloacaError, RuntimeError, ValueError):
    """The DefaultRunner was shut down; open a new one."""


class RunnerCreationError(CloacaError, ValueError, RuntimeError):
    """A DefaultRunner could not be created; the message starts with "Failed to create DefaultRunner: ".

    Every construction failure (a bad or other backend's URL, an unreachable database, a bad schema name) is one, so
    ``except ValueError`` and ``except RuntimeError`` both catch it. It is also an instance of the specific class
    (InvalidUrlError, DatabaseUnavailableError, SchemaVersionError, TenantError, ...) where there is one.
    """


CREATION_PREFIX = "Failed to create DefaultRunner: "

#: Specific class -> its construction-failure subclass, made on first use.
_creation_classes = {}


def _creation_class(cls):
    """The class deriving from both ``cls`` and RunnerCreationError, shown under ``cls``'s name."""
    if issubclass(cls, RunnerCreationError):
        return cls
    if not issubclass(cls, CloacaError):
        return RunnerCreationError
    found = _creation_classes.get(cls)
    if found is None:
        namespace = {"__doc__": cls.__doc__, "__module__": "cloaca", "__qualname__": cls.__qualname__}
        found = _creation_classes[cls] = type(cls.__name__, (cls, RunnerCreationError), namespace)
    return found


def runner_creation_error(error):
    """``error``, raised while creating a runner, as a RunnerCreationError (other errors are returned as they are)."""
    if not isinstance(error, (CloacaError, ValueError, RuntimeError)):
        return error
    message = error.args[0] if len(error.args) == 1 and isinstance(error.args[0], str) else str(error)
    if not message.startswith(CREATION_PREFIX):
        message = CREATION_PREFIX + message
    created = _creation_class(type(error))(message)
    created.__cause__ = error.__cause__
    return created
