"""`angreal cloaca bench --peers`: bad input exits 2 before anything is installed; the peers' scripts really run.

The bad-input tests run on a copy of the tree. The test_peer_run_* tests install
each pinned peer into its real virtualenv (.venvs/peer-<name>, reused once it
holds the pin) and run every workload of its script with tiny sizes on real
databases: SQLite files, and for DBOS on PostgreSQL the throw-away server the
harness starts. Deselect them with -k "not peer_run".
"""

import contextlib
import math
import re
import sys

import pytest
from test_bench import FIGURE, assert_bad_input, assert_nothing_built

from conftest import IN_CHECKOUT, ROOT, run_angreal

sys.path.insert(0, str(ROOT / ".angreal"))
from cloaca_pipeline import bench, databases, peers

SIZES = bench.Sizes(calls=5, warmup=1, chain=3, fanout=5, executions=10)


def replace_pin(tree, old: str, new: str) -> None:
    pyproject = tree / "pyproject.toml"
    text = pyproject.read_text()
    assert old in text
    pyproject.write_text(text.replace(old, new))


def test_peers_with_history_is_refused(tree):
    done = run_angreal(tree, "cloaca", "bench", "--backend", "sqlite", "--peers", "--history", "1000")
    assert_bad_input(done, "--peers and --history cannot be combined")
    assert_nothing_built(tree)


def test_peers_with_memory_is_refused(tree):
    done = run_angreal(tree, "cloaca", "bench", "--backend", "sqlite", "--peers", "--memory")
    assert_bad_input(done, "--peers and --memory cannot be combined")
    assert_nothing_built(tree)


@pytest.mark.parametrize("pin", ['"huey>=3.5"', '"huey"', '"redis==5.0.0"', "3.5"])
def test_a_peer_pinned_loosely_is_refused(tree, pin):
    replace_pin(tree, 'huey = "huey==3.5.4"', f"huey = {pin}")
    done = run_angreal(tree, "cloaca", "bench", "--backend", "sqlite", "--peers")
    assert_bad_input(done, "[tool.cloaca.bench-peers] huey =", "is not accepted", "pin one exact version")
    assert_nothing_built(tree)


def test_a_missing_peer_pin_is_refused(tree):
    replace_pin(tree, 'dbos = "dbos==3.4.0"\n', "")
    done = run_angreal(tree, "cloaca", "bench", "--backend", "postgres", "--peers")
    assert_bad_input(done, "must pin exactly the peers huey, dbos", "(it has huey)")
    assert_nothing_built(tree)


def test_bad_runs_is_refused_before_the_peers_are_installed(tree):
    done = run_angreal(tree, "cloaca", "bench", "--peers", "--runs", "0")
    assert_bad_input(done, "--runs '0' is not accepted")
    assert_nothing_built(tree)


def figures(**overrides) -> dict:
    """A column's figures: 1.0 everywhere, with `overrides`."""
    return {**{row.key: 1.0 for row in bench.ROWS}, **overrides}


def test_table_states_every_column_and_the_ratios():
    measured = {
        "sqlite NORMAL": figures(w1_ms_per_task=0.1, w2_tasks_per_s=5000.0),
        "sqlite FULL": figures(w1_ms_per_task=0.5, w2_tasks_per_s=1000.0),
        "Huey sqlite": figures(w1_ms_per_task=1.5, w2_tasks_per_s=500.0, durability="Huey's setting"),
        "DBOS sqlite": figures(w1_ms_per_task=4.0, w2_tasks_per_s=200.0, durability="DBOS's setting"),
        "postgres": "skipped: no server",
        "DBOS postgres": "skipped: no server",
    }
    command = peers.command_line({"backend": "sqlite", "runs": "3", "output": None})
    assert command == "angreal cloaca bench --peers --backend sqlite --runs 3"
    text = peers.report(measured, 3, command, SIZES)
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == [
        "workload",
        "cloaca sqlite NORMAL",
        "cloaca sqlite FULL",
        "Huey 3.5.4 sqlite",
        "DBOS 3.4.0 sqlite",
        "cloaca postgres",
        "DBOS 3.4.0 postgres",
        "sqlite NORMAL ÷ best sqlite peer",
        "sqlite FULL ÷ DBOS sqlite",
        "postgres ÷ DBOS postgres",
    ]
    rows = {cells[0]: cells for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:])}
    assert [r.label for r in bench.ROWS] == list(rows)
    w1 = rows["W1: chain of 100 tasks, per task"]
    # Latency: the best peer is the fastest (Huey, 1.5 ms); 1.5 / 0.1 = 15x. FULL against DBOS: 4.0 / 0.5.
    assert w1[7:] == ["15.00x (Huey sqlite)", "8.00x", "—"], w1
    w2 = rows["W2: fan-out of 200 tasks + join"]
    assert w2[7:9] == ["10.00x (Huey sqlite)", "5.00x"], w2
    assert w2[5:7] == ["skipped: no server", "skipped: no server"], w2
    assert "- Huey 3.5.4 sqlite: Huey's setting." in text and "- DBOS 3.4.0 sqlite: DBOS's setting." in text
    assert "- cloaca sqlite FULL: WAL, synchronous=FULL" in text
    # The goals: W1 15x met exactly, W2 10x against 15x missed; nothing said of unmeasured postgres.
    assert "- sqlite NORMAL W1: 15.00x Huey sqlite, goal 15x: met." in text
    assert "- sqlite NORMAL W2: 10.00x Huey sqlite, goal 15x: missed." in text
    assert "- sqlite NORMAL W3: 1.00x" in text and "goal 8x: missed." in text
    assert "postgres W1" not in text
    assert re.search(rf"Measured \d{{4}}-\d\d-\d\d \d\d:\d\d UTC with `{command}` on .+, \d+ CPU\(s\)", text), text


# ------------------------------------------------------- real peer runs ---


def run_every_workload(column: bench.Column, url_of) -> dict:
    """Each workload of the column's script once, with tiny sizes; the JSON results by workload."""
    python = peers.ensure_peer_venv(peers.read_pins()[column.peer])
    return {w: bench.run_workload(python, w, [url_of(w)], SIZES, column.script) for w in bench.FIGURES}


def assert_every_task_ran(results: dict, peer: str) -> None:
    assert set(results) == set(bench.FIGURES)
    for workload, wanted in bench.FIGURES.items():
        result = results[workload]
        assert result["workload"] == workload and result["runs"] == 1, result
        assert result["peer"] == peer and result["version"] == peers.read_pins()[peer].version, result
        assert result["durability"], result
        for field, _ in wanted:
            assert math.isfinite(result[field]) and result[field] > 0, result
    assert results["w1"]["completed_per_run"] == [SIZES.chain], results["w1"]
    assert results["w2"]["completed_per_run"] == [SIZES.fanout + 1], results["w2"]
    assert results["w4"]["completed_per_run"] == [SIZES.executions], results["w4"]
    assert results["w3"]["calls"] == SIZES.calls and results["w3"]["p95_ms"] >= results["w3"]["p50_ms"]


def peer_table_cells(results: dict, label: str) -> list[str]:
    """The peer's column of the --peers table made from `results`."""
    measured = {label: {key: float(results[w][field]) for w, wanted in bench.FIGURES.items() for field, key in wanted}}
    column = peers.TABLE_COLUMNS.index(label) + 1
    lines = peers.format_table(measured).splitlines()[2:]
    return [[c.strip() for c in line.strip("|").split("|")][column] for line in lines]


@IN_CHECKOUT
@pytest.mark.parametrize("label", ["Huey sqlite", "DBOS sqlite"])
def test_peer_run_on_sqlite(tmp_path, label):
    column = next(c for c in peers.columns_for(("sqlite",)) if c.label == label)
    results = run_every_workload(column, lambda w: f"sqlite://{tmp_path / (w + '.db')}")
    assert_every_task_ran(results, column.peer)
    assert "synchronous=FULL" in results["w1"]["durability"], results["w1"]
    if column.peer == "huey":
        assert "not durable in flight" in results["w1"]["durability"]
    assert all(FIGURE.match(cell) for cell in peer_table_cells(results, label))


@IN_CHECKOUT
def test_peer_run_dbos_on_postgres():
    with contextlib.ExitStack() as cleanup:
        try:
            base_url = cleanup.enter_context(databases.provide_database("postgres"))
        except databases.NoPostgresServer as exc:
            pytest.skip(f"no PostgreSQL server binaries: {exc}")
        fresh = bench.FreshDatabases("postgres", base_url)
        cleanup.callback(fresh.drop_all)
        column = peers.columns_for(("postgres",))[0]
        results = run_every_workload(column, lambda w: fresh.new_url(f"peer-{w}"))
    assert_every_task_ran(results, "dbos")
    assert re.search(r"PostgreSQL fsync=\w+, synchronous_commit=\w+", results["w1"]["durability"]), results["w1"]
    assert all(FIGURE.match(cell) for cell in peer_table_cells(results, "DBOS postgres"))
