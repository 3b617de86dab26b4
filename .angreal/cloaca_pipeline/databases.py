"""Provide each backend's test suite with a real database.

sqlite: a fresh database file in a temporary directory.
postgres: CLOACA_TEST_POSTGRES_URL when set (checked to answer as a PostgreSQL
server first), otherwise a throw-away cluster made with the machine's own
initdb/pg_ctl in a temporary directory, on a free port, with trust auth, and
stopped and deleted afterwards. PostgreSQL refuses to run as root, so as root
the cluster runs as an unprivileged system user through runuser.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import re
import shutil
import socket
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cloaca_pipeline.errors import PipelineError

POSTGRES_URL_ENV = "CLOACA_TEST_POSTGRES_URL"
#: Unprivileged accounts a root-run cluster may use, in order of preference.
POSTGRES_SYSTEM_USERS = ("postgres", "nobody")
#: Set while a throw-away cluster runs: JSON with its pg_ctl command line and start options.
PG_CTL_ENV = "CLOACA_TEST_PG_CTL"


class NoPostgresServer(PipelineError):
    """No PostgreSQL server binaries exist on this machine."""


@contextlib.contextmanager
def provide_database(backend: str, *, durable: bool = False):
    """Yield the database URL the backend's tests use; clean it up afterwards.

    `durable` (for measurements) starts a throw-away cluster with PostgreSQL's
    default durability instead of the tests' fast one.
    """
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="cloaca-sqlite-test-") as tmp:
            yield f"sqlite:///{Path(tmp) / 'cloaca-test.db'}"
    elif backend == "postgres":
        url = os.environ.get(POSTGRES_URL_ENV, "").strip()
        if url:
            require_postgres_answers(url, source=POSTGRES_URL_ENV)
            yield url
        else:
            with throwaway_postgres_cluster(durable=durable) as cluster:
                yield cluster.url
    else:  # validated earlier; a new backend needs a branch here
        raise PipelineError(
            f"No test database is defined for the backend {backend!r}; "
            "add one to .angreal/cloaca_pipeline/databases.py."
        )


def require_postgres_answers(url: str, *, source: str, timeout: float = 3.0) -> None:
    """Raise unless `url` points at a server that speaks the PostgreSQL protocol."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql") or not parts.hostname:
        raise PipelineError(
            f"{source}={url!r} is not a PostgreSQL URL. Give one like "
            "postgresql://user:password@127.0.0.1:5432/dbname, or unset it to let the "
            "harness start a throw-away local cluster."
        )
    host, port = parts.hostname, parts.port or 5432
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            # An SSLRequest: a PostgreSQL server answers with one byte, S or N.
            sock.sendall(struct.pack("!ii", 8, 80877103))
            sock.settimeout(timeout)
            answer = sock.recv(1)
    except OSError as exc:
        raise PipelineError(
            f"The PostgreSQL server of {source} ({host}:{port}) does not answer: {exc}. "
            "Start it or fix the URL, or unset the variable to let the harness start a "
            "throw-away local cluster."
        ) from exc
    if answer not in (b"S", b"N"):
        raise PipelineError(
            f"{host}:{port} (from {source}) answered, but not as a PostgreSQL server. Check the port in the URL."
        )


def find_postgres_bin_dir() -> Path:
    """The directory holding initdb, pg_ctl and postgres."""
    candidates = []
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(os.path.realpath(on_path)).parent)
    candidates += sorted(
        (Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin")),
        key=lambda p: [int(x) for x in re.findall(r"\d+", p.parent.name)],
        reverse=True,
    )
    for directory in candidates:
        if all((directory / tool).exists() for tool in ("initdb", "pg_ctl", "postgres")):
            return directory
    raise NoPostgresServer(
        "No PostgreSQL server binaries (initdb, pg_ctl, postgres) were found on PATH or in "
        "/usr/lib/postgresql/*/bin, so the postgres backend cannot be tested. Install the "
        "server (Debian: apt-get install postgresql) or set CLOACA_TEST_POSTGRES_URL to a "
        "server the tests may use."
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unprivileged_user() -> str | None:
    """None when not root; otherwise the system account to run PostgreSQL as."""
    if os.geteuid() != 0:
        return None
    for name in POSTGRES_SYSTEM_USERS:
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise PipelineError(
        "Running as root, and PostgreSQL refuses to run as root, but none of the accounts "
        f"{', '.join(POSTGRES_SYSTEM_USERS)} exists to run it as. Create one "
        "(useradd --system postgres) or set CLOACA_TEST_POSTGRES_URL."
    )


def run_as(user: str | None, command: list, log: Path) -> subprocess.CompletedProcess:
    """Run `command` as `user` (None: as ourselves), output appended to `log`."""
    if user is not None:
        command = ["runuser", "-u", user, "--", *command]
    with open(log, "ab") as out:
        return subprocess.run([str(c) for c in command], stdout=out, stderr=subprocess.STDOUT, check=False)


@dataclass(frozen=True)
class Cluster:
    """A throw-away cluster the harness started: its URL, and what it takes to control it."""

    url: str
    bin_dir: Path
    data: Path
    log: Path
    user: str | None
    #: The server options `pg_ctl start` needs again (a restart keeps them).
    start_options: str

    def pg_ctl(self) -> list:
        """The command line of pg_ctl for this cluster, run as the server's user."""
        as_user = ["runuser", "-u", self.user, "--"] if self.user else []
        return [*as_user, self.bin_dir / "pg_ctl", "-D", self.data, "-l", self.log]

    def restart(self) -> None:
        """`pg_ctl restart -m fast`: every connection is cut, the server comes back on the same port."""
        done = run_as(None, [*self.pg_ctl(), "-m", "fast", "-w", "-t", "60", "restart"], self.log)
        if done.returncode != 0:
            raise PipelineError(
                f"pg_ctl restart failed (exit {done.returncode}); the server log: {log_tail(self.log)}."
            )


#: Server options of the tests' cluster: nothing waits for a disk flush.
FAST_OPTIONS = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"


@contextlib.contextmanager
def throwaway_postgres_cluster(*, durable: bool = False):
    """Start a private PostgreSQL cluster; yield it (a Cluster); stop and delete it.

    The tests' cluster runs with FAST_OPTIONS; a `durable` one keeps
    PostgreSQL's defaults (fsync, synchronous_commit and full_page_writes on).
    """
    bin_dir = find_postgres_bin_dir()
    user = unprivileged_user()
    tmp = Path(tempfile.mkdtemp(prefix="cloaca-pg-"))
    data, log = tmp / "data", tmp / "server.log"
    log.touch()
    if user is not None:
        entry = pwd.getpwnam(user)
        for path in (tmp, log):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    port = free_port()
    try:
        init = run_as(
            user,
            [bin_dir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-sync"],
            log,
        )
        if init.returncode != 0:
            raise PipelineError(
                f"initdb failed (exit {init.returncode}); its log: {log_tail(log)}. "
                "Set CLOACA_TEST_POSTGRES_URL to use an existing server instead."
            )
        options = f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1 -c max_connections=200"
        if not durable:
            options = f"{options} {FAST_OPTIONS}"
        start = run_as(user, [bin_dir / "pg_ctl", "-D", data, "-l", log, "-o", options, "-w", "-t", "60", "start"], log)
        if start.returncode != 0:
            raise PipelineError(
                f"The throw-away PostgreSQL cluster did not start (exit {start.returncode}); "
                f"its log: {log_tail(log)}. Set CLOACA_TEST_POSTGRES_URL to use an existing "
                "server instead."
            )
        cluster = Cluster(f"postgresql://postgres@127.0.0.1:{port}/postgres", bin_dir, data, log, user, options)
        # Outage tests restart and stop this server themselves (in pytest's
        # process): they get its pg_ctl command line and start options.
        previous = os.environ.get(PG_CTL_ENV)
        os.environ[PG_CTL_ENV] = json.dumps({"command": [str(c) for c in cluster.pg_ctl()], "start_options": options})
        try:
            yield cluster
        finally:
            if previous is None:
                os.environ.pop(PG_CTL_ENV, None)
            else:
                os.environ[PG_CTL_ENV] = previous
    finally:
        # Also after a failed or timed-out start: the server may be up regardless.
        if (data / "postmaster.pid").exists():
            run_as(user, [bin_dir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"], log)
        shutil.rmtree(tmp, ignore_errors=True)


def log_tail(log: Path, lines: int = 5) -> str:
    """The last lines of a log file, joined for a one-paragraph message."""
    try:
        return " | ".join(log.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"
