"""`bench --peers`: Huey and DBOS measured beside cloaca in the same run, as one table with the ratios.

Each peer is pinned to an exact version in [tool.cloaca.bench-peers] of the
top-level pyproject.toml (the only place the versions are written) and
installed into its own virtualenv `.venvs/peer-<name>`, reused while it holds
that pin. Its workloads are bench_peers/<name>_workloads.py, run in that
virtualenv on fresh databases beside ours (bench.bench_backend), printing the
JSON bench_workloads.py prints.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import shlex
import shutil
import tomllib
from dataclasses import dataclass
from pathlib import Path

from cloaca_pipeline import bench, project, venvs
from cloaca_pipeline.errors import PipelineError

PINS_TABLE = "[tool.cloaca.bench-peers]"
DEFAULT_SIZES = bench.Sizes()
#: The peers the harness has workload scripts for, and what they are called in the table.
PEER_NAMES = {"huey": "Huey", "dbos": "DBOS"}


@dataclass(frozen=True)
class Peer:
    """A peer: its name and the exact requirement its virtualenv holds."""

    name: str
    requirement: str  # "huey==3.5.4"

    @property
    def venv(self) -> str:
        """The virtualenv's name under .venvs/."""
        return f"peer-{self.name}"

    @property
    def version(self) -> str:
        return self.requirement.split("==", 1)[1]


def read_pins(pyproject: Path = project.PYPROJECT) -> dict[str, Peer]:
    """The peers of [tool.cloaca.bench-peers], each checked to be a known peer pinned to one exact version."""
    try:
        table = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("tool", {}).get("cloaca", {})
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise PipelineError(f"Cannot read {PINS_TABLE} from {pyproject}: {exc}.") from exc
    pins = table.get("bench-peers")
    if not isinstance(pins, dict) or set(pins) != set(PEER_NAMES):
        found = ", ".join(sorted(pins)) if isinstance(pins, dict) else "nothing"
        raise PipelineError(
            f"{PINS_TABLE} in {pyproject.name} must pin exactly the peers {', '.join(PEER_NAMES)} "
            f'(it has {found}), e.g. huey = "huey==3.5.4"; bench --peers installs them from there.'
        )
    peers = {}
    for name, requirement in pins.items():
        if not isinstance(requirement, str) or not re.fullmatch(
            rf"{name}==\d+(\.\d+)*", requirement.strip(), flags=re.IGNORECASE
        ):
            raise PipelineError(
                f"{PINS_TABLE} {name} = {requirement!r} is not accepted: pin one exact version of {name}, "
                f'e.g. {name} = "{name}==1.2.3", so every run measures the same code.'
            )
        peers[name] = Peer(name, requirement.strip())
    return peers


def columns_for(backends: tuple[str, ...]) -> list[bench.Column]:
    """The peer columns measured with the given backends: Huey and DBOS on SQLite, DBOS on PostgreSQL."""
    columns = []
    if "sqlite" in backends:
        columns.append(bench.Column("Huey sqlite", "sqlite", "", "huey"))
        columns.append(bench.Column("DBOS sqlite", "sqlite", "", "dbos"))
    if "postgres" in backends:
        columns.append(bench.Column("DBOS postgres", "postgres", "", "dbos"))
    return columns


def ensure_peer_venv(peer: Peer) -> Path:
    """Make .venvs/peer-<name> hold exactly the pinned peer; its interpreter. Reused when it already does."""
    wanted = {"interpreter": venvs.interpreter_identity(), "requirement": peer.requirement}
    python = project.venv_python(peer.venv)
    if python.exists() and venvs.read_record(peer.venv) == wanted:
        return python
    if project.venv_dir(peer.venv).exists():
        shutil.rmtree(project.venv_dir(peer.venv))
    print(f"bench: installing {peer.requirement} into {project.relative(project.venv_dir(peer.venv))}", flush=True)
    venvs.create_venv(peer.venv)
    venvs.pip_install(peer.venv, [peer.requirement], peer.requirement)
    (project.venv_dir(peer.venv) / venvs.INSTALLED_RECORD).write_text(json.dumps(wanted, indent=1))
    return python


def prepare(backends: tuple[str, ...], pins: dict[str, Peer]) -> dict[str, tuple[tuple[bench.Column, Path], ...]]:
    """Install the peers the backends need; backend -> its peer columns with their interpreters."""
    columns = columns_for(backends)
    pythons = {name: ensure_peer_venv(pins[name]) for name in sorted({c.peer for c in columns})}
    return {b: tuple((c, pythons[c.peer]) for c in columns if c.backend == b) for b in backends}


# ---------------------------------------------------------------- table ---

#: The table's figure columns: ours and the peers on SQLite, then on PostgreSQL.
TABLE_COLUMNS = ("sqlite NORMAL", "sqlite FULL", "Huey sqlite", "DBOS sqlite", "postgres", "DBOS postgres")
#: The ratios: (heading, our column, the peer columns it is compared with: the best of them counts).
RATIOS = (
    ("sqlite NORMAL ÷ best sqlite peer", "sqlite NORMAL", ("Huey sqlite", "DBOS sqlite")),
    ("sqlite FULL ÷ DBOS sqlite", "sqlite FULL", ("DBOS sqlite",)),
    ("postgres ÷ DBOS postgres", "postgres", ("DBOS postgres",)),
)

#: The goals against the peers: (our column, row key) -> how many times better
#: than the best peer of that ratio column our figure must be. The ONLY copy of
#: these numbers; the report says where each stands. (sqlite FULL's goal is in
#: fsync latencies: bench.FSYNC_BUDGET.)
RATIO_TARGETS = {
    ("sqlite NORMAL", "w1_ms_per_task"): 15,
    ("sqlite NORMAL", "w2_tasks_per_s"): 15,
    ("sqlite NORMAL", "w3_p50_ms"): 8,
    ("sqlite NORMAL", "cold_ms"): 1,
    ("postgres", "w1_ms_per_task"): 6,
    ("postgres", "w2_tasks_per_s"): 10,
    ("postgres", "w3_p50_ms"): 6,
}


def best_ratio(
    row: bench.Row, measured: dict, ours_label: str, peer_labels: tuple[str, ...]
) -> tuple[float, str] | None:
    """Our advantage over the best measured peer, and which peer that is; None when a side was not measured."""
    ours = measured.get(ours_label)
    peers = [(p, measured.get(p)) for p in peer_labels]
    peers = [(p, f[row.key]) for p, f in peers if isinstance(f, dict)]
    if not isinstance(ours, dict) or not peers:
        return None
    best_label, best = max(peers, key=lambda p: p[1]) if row.higher_is_better else min(peers, key=lambda p: p[1])
    return advantage(row, ours[row.key], best), best_label


def target_lines(measured: dict[str, dict | str]) -> list[str]:
    """One line per goal of RATIO_TARGETS that was measured: the ratio, the goal, met or not."""
    lines = []
    rows = {row.key: row for row in bench.ROWS}
    for (ours_label, key), goal in RATIO_TARGETS.items():
        row = rows[key]
        peer_labels = next(theirs for _, ours, theirs in RATIOS if ours == ours_label)
        found = best_ratio(row, measured, ours_label, peer_labels)
        if found is None:
            continue
        ratio, best_label = found
        verdict = "met" if ratio >= goal else "missed"
        lines.append(f"{ours_label} {row.label.split(':')[0]}: {ratio:.2f}x {best_label}, goal {goal}x: {verdict}.")
    return lines


def heading(label: str) -> str:
    """A figure column's heading: ours are prefixed with cloaca, the peers' with their version."""
    for column in columns_for(("sqlite", "postgres")):
        if column.label == label:
            return f"{label.split()[0]} {read_version(column.peer)} {label.split()[1]}"
    return f"cloaca {label}"


def read_version(peer: str) -> str:
    """The pinned version of a peer (the table says which was measured)."""
    try:
        return read_pins()[peer].version
    except PipelineError:
        return "?"


def advantage(row: bench.Row, ours: float, theirs: float) -> float:
    """How many times better our figure is than theirs (above 1: ours is better)."""
    return ours / theirs if row.higher_is_better else theirs / ours


def ratio_cell(row: bench.Row, measured: dict, ours_label: str, peer_labels: tuple[str, ...]) -> str:
    """'12.3x (Huey sqlite)' against the best measured peer, or '—' when a side was not measured."""
    found = best_ratio(row, measured, ours_label, peer_labels)
    if found is None:
        return "—"
    ratio, best_label = found
    name = f" ({best_label})" if len(peer_labels) > 1 else ""
    return f"{ratio:.2f}x{name}"


def format_table(measured: dict[str, dict | str]) -> str:
    """workload | our three columns and the peers' three | the three ratios."""
    header = ["workload", *(heading(c) for c in TABLE_COLUMNS), *(r[0] for r in RATIOS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in bench.ROWS:
        cells = [row.label, *(bench.cell(row, measured.get(c)) for c in TABLE_COLUMNS)]
        cells += [ratio_cell(row, measured, ours, theirs) for _, ours, theirs in RATIOS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (the platform's processor string elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def durability_lines(measured: dict[str, dict | str]) -> list[str]:
    """One line per measured system: the durability it ran with."""
    ours = {
        "sqlite NORMAL": "WAL, synchronous=NORMAL: a completed task is committed before its dependents start; "
        "the last commits before a power loss may be lost, never half-written",
        "sqlite FULL": "WAL, synchronous=FULL: every commit is fsynced",
        "postgres": "the same server as DBOS postgres, the same settings",
    }
    lines = []
    for label in TABLE_COLUMNS:
        figures = measured.get(label)
        if not isinstance(figures, dict):
            continue
        said = figures.get("durability", ours.get(label, "not stated"))
        lines.append(f"{heading(label)}: {said}.")
    return lines


def command_line(options: dict[str, str | None]) -> str:
    """The bench --peers command as the user gave it (option -> value, None when not given), for the report."""
    given = "".join(f" --{name} {shlex.quote(str(value))}" for name, value in options.items() if value is not None)
    return f"angreal cloaca bench --peers{given}"


def report(measured: dict[str, dict | str], runs: int, command: str, sizes: bench.Sizes = DEFAULT_SIZES) -> str:
    """The whole --peers report: machine, date and command, the table, how to read it, durability."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        f"Measured {now} with `{command}` on {cpu_model()}, {os.cpu_count()} CPU(s), "
        f"{platform.platform()}, CPython {platform.python_version()}; no-op Python tasks; "
        f"{runs} run(s) per workload, each on a fresh database; W1 a chain of {sizes.chain}, "
        f"W2 a fan-out of {sizes.fanout} + join, W3 {sizes.calls} calls per run after {sizes.warmup} "
        f"warm-up calls, W4 {sizes.executions:,} executions.",
        "",
        format_table(measured),
        "",
        "Ratios: how many times better cloaca's figure is than the peer's (above 1: cloaca is "
        "better): the peer's time ÷ ours for ms, our rate ÷ the peer's for tasks/s and executions/s. "
        "sqlite NORMAL is compared with the better of Huey and DBOS on SQLite, sqlite FULL with DBOS "
        "on SQLite (which runs at FULL), postgres with DBOS on the same PostgreSQL server.",
        "",
        "Goals (times better than the best peer of the ratio column):",
        *(f"- {line}" for line in target_lines(measured)),
        "",
        "Durability:",
        *(f"- {line}" for line in durability_lines(measured)),
    ]
    if isinstance(measured.get("postgres"), dict):
        parts.append(f"- {bench.postgres_server_note()}")
    if fsync := bench.fsync_note(measured):
        parts.append(f"- {fsync}")
    return "\n".join(parts)
