"""`angreal cloaca bench`: bad input exits 2 before anything is built; the report's shape.

The bad-input tests run on a copy of the tree and finish before any build.
test_bench_workloads_report_shape runs the real workloads script, with tiny
sizes, in the sqlite backend's test virtualenv (.venvs/sqlite, installed by the
backend suite that runs before this one), as do the history and memory shape
tests; deselect them with -k "not bench_workloads".
"""

import math
import re
import sys

import pytest

from conftest import IN_CHECKOUT, ROOT, run_angreal

sys.path.insert(0, str(ROOT / ".angreal"))
from cloaca_pipeline import bench  # the pipeline package lives in .angreal/

HEADER = "| workload | sqlite NORMAL | sqlite FULL | postgres | target sqlite | target postgres |"
FIGURE = re.compile(r"^[\d,]+(\.\d+)? (ms|tasks/s|executions/s)$")


def assert_bad_input(done, *phrases):
    """Exit 2, one clear paragraph on stderr, no traceback."""
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output
    assert "cloaca: error:" in done.stderr
    flat = " ".join(output.split())
    for phrase in phrases:
        assert phrase in flat, output


def assert_nothing_built(tree):
    assert not (tree / ".venvs").exists(), "bad input must stop bench before any virtualenv"
    assert not (tree / "cloaca-backend" / "target" / "wheels").exists(), "nor any build"


def test_unknown_backend(tree):
    done = run_angreal(tree, "cloaca", "bench", "--backend", "oracle")
    assert_bad_input(done, "Unknown backend 'oracle'", "sqlite, postgres")
    assert_nothing_built(tree)


@pytest.mark.parametrize("runs", ["0", "many", "2.5"])
def test_runs_must_be_a_positive_whole_number(tree, runs):
    done = run_angreal(tree, "cloaca", "bench", "--backend", "sqlite", "--runs", runs)
    assert_bad_input(done, f"--runs '{runs}' is not accepted", "at least 1")
    assert_nothing_built(tree)


def test_output_in_a_missing_directory(tree, tmp_path):
    target = tmp_path / "no-such-dir" / "bench.md"
    done = run_angreal(tree, "cloaca", "bench", "--backend", "sqlite", "--output", str(target))
    assert_bad_input(done, "does not exist")
    assert_nothing_built(tree)


def table_rows(table: str) -> list[list[str]]:
    """The cells of a markdown table's body rows (header and rule left out)."""
    lines = table.splitlines()
    assert lines[0] == HEADER, table
    assert set(lines[1]) <= set("|-"), table
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]


def test_report_flags_figures_over_budget_and_states_the_targets():
    within = {row.key: (1e9 if row.higher_is_better else 1e-6) for row in bench.ROWS}
    over = dict(within, w1_ms_per_task=99.0)
    assert "Every measured figure is within its target." in bench.report({"sqlite NORMAL": within}, 3)
    text = bench.report({"sqlite NORMAL": over}, 3)
    assert "Over budget: sqlite NORMAL: W1 99.0 ms (target ≤ 0.25 ms)." in text
    rows = {cells[0]: cells for cells in table_rows(bench.format_table({}))}
    assert rows["W3: 1-task workflow, call→result p50"][4:] == ["≤ 0.5 ms", "≤ 2 ms"]
    assert rows["W2: fan-out of 200 tasks + join"][4:] == ["≥ 4,000 tasks/s", "≥ 1,500 tasks/s"]


def test_fsync_latency_is_measured_on_the_given_disk_and_read_against_the_full_chain(tmp_path):
    latency = bench.fsync_latency_ms(tmp_path, samples=5)
    assert 0 < latency < 10_000
    assert list(tmp_path.iterdir()) == [], "the probe file is removed"
    measured = {"sqlite NORMAL": {"w1_ms_per_task": 0.1}, "sqlite FULL": {"w1_ms_per_task": 0.4, "fsync_ms": 0.2}}
    note = bench.fsync_note(measured)
    assert "0.300 ms more than at NORMAL, 1.5 write+fsync latencies" in note and "within the budget of 2" in note
    measured["sqlite FULL"]["w1_ms_per_task"] = 0.6
    assert "over the budget of 2" in bench.fsync_note(measured)
    assert bench.fsync_note({"sqlite NORMAL": {"w1_ms_per_task": 0.1}}) is None
    assert any("write+fsync" in line for line in bench.notes(measured))


@IN_CHECKOUT
def test_bench_workloads_report_shape(tmp_path):
    python = ROOT / ".venvs" / "sqlite" / "bin" / "python"
    if not python.exists():
        pytest.fail(
            f"{python} is missing: the sqlite backend suite of `angreal cloaca test` "
            "installs it before this suite runs."
        )
    fresh = bench.FreshDatabases("sqlite", f"sqlite:///{tmp_path / 'harness.db'}")
    sizes = bench.Sizes(calls=5, warmup=1, chain=3, fanout=4, executions=10)
    runs = 2

    figures = bench.measure_column(python, bench.COLUMNS[0], fresh, runs, sizes)

    assert set(figures) == {row.key for row in bench.ROWS}
    assert all(math.isfinite(v) and v > 0 for v in figures.values()), figures
    assert figures["w3_p95_ms"] >= figures["w3_p50_ms"], figures
    databases = sorted(p.name for p in tmp_path.glob("bench_*.db"))
    assert len(databases) == runs * len(bench.FIGURES), f"one fresh database per run: {databases}"

    table = bench.format_table({"sqlite NORMAL": figures, "postgres": "skipped: no server"})
    rows = table_rows(table)
    assert [cells[0] for cells in rows] == [row.label for row in bench.ROWS], table
    for cells in rows:
        assert len(cells) == 6, cells
        assert FIGURE.match(cells[1]), cells
        assert cells[2:4] == ["not run", "skipped: no server"], cells


@pytest.mark.parametrize("history", ["99", "lots", "1e6"])
def test_history_must_be_a_whole_number_of_rows(tree, history):
    done = run_angreal(tree, "cloaca", "bench", "--backend", "sqlite", "--history", history)
    assert_bad_input(done, f"--history '{history}' is not accepted", "at least 100")
    assert_nothing_built(tree)


@IN_CHECKOUT
def test_bench_workloads_history_shape(tmp_path):
    """The history workload loads its rows with SQL, measures both databases, and prunes what it loaded."""
    python = ROOT / ".venvs" / "sqlite" / "bin" / "python"
    if not python.exists():
        pytest.fail(f"{python} is missing: the sqlite backend suite of `angreal cloaca test` installs it first.")
    fresh = bench.FreshDatabases("sqlite", f"sqlite:///{tmp_path / 'harness.db'}")
    sizes = bench.Sizes(chain=3, fanout=4)

    result = bench.measure_history(python, bench.COLUMNS[0], fresh, 1, 1000, sizes)

    assert result["task_rows"] == 1000
    keys = {key for key, _, _ in bench.HISTORY_ROWS}
    for side in ("empty", "loaded"):
        assert set(result[side]) == keys, result
        assert all(math.isfinite(v) and v > 0 for v in result[side].values()), result
    # Ten loaded executions, plus the chain and the fan-out run on the loaded database.
    assert result["per_run"]["prunes"][0]["pruned_executions"] == 12, result
    assert result["load_rows_per_s"] > 0 and result["prune_rows_per_s"] > 0, result
    figures = {row.key: 1.0 for row in bench.ROWS}
    table = bench.format_history_table({"sqlite NORMAL": {**figures, "history": result}})
    assert "1,000 rows" in table.splitlines()[0], table
    assert len(table.splitlines()) == 2 + len(bench.HISTORY_ROWS) + 2, table


@IN_CHECKOUT
def test_bench_workloads_memory_shape(tmp_path):
    """The memory workload stores its chains, measures the file and a queued child's RSS, per run."""
    python = ROOT / ".venvs" / "sqlite" / "bin" / "python"
    if not python.exists():
        pytest.fail(f"{python} is missing: the sqlite backend suite of `angreal cloaca test` installs it first.")
    fresh = bench.FreshDatabases("sqlite", f"sqlite:///{tmp_path / 'harness.db'}")
    sizes = bench.Sizes(chain=5, queued=200, stored=100)
    runs = 2

    result = bench.measure_memory(python, bench.COLUMNS[0], fresh, runs, sizes)

    assert result["runs"] == runs and result["task_rows"] == 100 and result["executions"] == 20, result
    for key, _ in bench.MEMORY_ROWS:
        assert isinstance(result[key], float) and math.isfinite(result[key]) and result[key] > 0, (key, result)
    assert result["bytes_per_completed_execution"] == pytest.approx(5 * result["bytes_per_stored_task"]), result
    assert set(result["counted"]) == {"rss", "disk"}, result
    for rss in result["per_run"]["rss"]:
        assert rss["handles_held"] == 200 and rss["running_while_measured"] == rss["workers"], rss
    for disk in result["per_run"]["disk"]:
        assert disk["stored_bytes"] > disk["empty_bytes"] > 0, disk
        assert disk["tables_bytes"]["cloaca_task_executions"] > 0, disk
    assert len(list(tmp_path.glob("bench_*memory*.db"))) == runs, "one fresh database per run"

    table = bench.format_memory_table({"sqlite NORMAL": {"memory": result}, "postgres": "skipped: no server"})
    lines = table.splitlines()
    assert lines[0] == "| memory | sqlite NORMAL |", table
    assert [line.split("|")[1].strip() for line in lines[2:]] == [label for _, label in bench.MEMORY_ROWS], table
    assert all(re.search(r"\| [\d,]+ B \|$", line) for line in lines[2:]), table
    text = bench.report({"sqlite NORMAL": {**{row.key: 1.0 for row in bench.ROWS}, "memory": result}}, runs)
    assert "Memory: process RSS growth over 200 1-task executions" in text and table in text, text
