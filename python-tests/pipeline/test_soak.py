"""`angreal cloaca soak`: bad input exits 2 before anything starts; a short real soak passes; the
checks catch a fault injected into a copy of the tree.

The runs are real: runner processes of the sqlite backend's test virtualenv
(.venvs/sqlite, installed by the backend suite that runs before this one),
real SIGKILLs, a real database file. Deselect them with -k "not soak_run".
"""

import re
import shutil

import pytest

from conftest import IN_CHECKOUT, ROOT, copy_installed_builds, edit, run_angreal

VIOLATION_KINDS = (
    "wrong-status",
    "stuck",
    "task-state",
    "lost-submission",
    "no-side-effect",
    "duplicate-side-effect",
    "orphan-side-effect",
    "kill-overreach",
    "cron-duplicate",
    "cron-history",
    "cron-gap",
    "rss-growth",
    "runner-exit",
)
WORKFLOWS = ("soak_chain", "soak_fanout", "soak_retry", "soak_async", "soak_doomed", "soak_cron")
RUNNER = ".angreal/cloaca_pipeline/soak_runner.py"


def assert_bad_input(done, *phrases):
    """Exit 2, one clear paragraph on stderr, no traceback, nothing started."""
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output
    assert "cloaca: error:" in done.stderr
    assert "runners up" not in output
    flat = " ".join(output.split())
    for phrase in phrases:
        assert phrase in flat, output


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (["--backend", "oracle"], "Unknown backend 'oracle'"),
        (["--backend", "sqlite", "--minutes", "0"], "--minutes '0' is not accepted"),
        (["--backend", "sqlite", "--minutes=-1"], "--minutes '-1' is not accepted"),
        (["--backend", "sqlite", "--minutes", "soon"], "--minutes 'soon' is not accepted"),
        (["--backend", "sqlite", "--minutes", "nan"], "--minutes 'nan' is not accepted"),
        (["--backend", "sqlite", "--runners", "1"], "--runners '1' is not accepted"),
        (["--backend", "sqlite", "--kill-every", "0"], "--kill-every '0' is not accepted"),
        (["--backend", "sqlite", "--restart-server", "on"], "the sqlite backend has none"),
        (["--backend", "postgres", "--restart-server", "maybe"], "give on or off"),
    ],
)
def test_bad_input_exits_2_before_anything_is_built(tree, args, phrase):
    done = run_angreal(tree, "cloaca", "soak", *args)
    assert_bad_input(done, phrase)
    assert not (tree / ".venvs").exists(), "bad input must stop soak before any virtualenv"
    assert not (tree / "cloaca-backend" / "target" / "wheels").exists(), "nor any build"


def violation_counts(output: str) -> dict[str, int]:
    """The violation table: kind -> count (every kind must have its row)."""
    counts = dict(re.findall(r"^\| ([a-z-]+) \| (\d+) \|$", output, flags=re.MULTILINE))
    assert set(VIOLATION_KINDS) <= set(counts), output
    return {kind: int(counts[kind]) for kind in VIOLATION_KINDS}


def figure(output: str, label: str) -> str:
    match = re.search(rf"^\| {re.escape(label)} \| (.+) \|$", output, flags=re.MULTILINE)
    assert match, f"no row {label!r} in\n{output}"
    return match.group(1)


def workflow_rows(output: str) -> dict[str, list[str]]:
    """workflow -> [designed, started, Completed, Failed, unfinished]."""
    rows = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells and cells[0] in (*WORKFLOWS, "total"):
            rows[cells[0]] = cells[1:]
    assert set(rows) == {*WORKFLOWS, "total"}, output
    return rows


@IN_CHECKOUT
def test_soak_run_sqlite_is_clean():
    done = run_angreal(ROOT, "cloaca", "soak", "--backend", "sqlite", "--minutes", "0.3", timeout=400)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "soak: sqlite, 0.3 min of kills, 3 runners, a SIGKILL every 3 s, server restart off" in done.stdout
    assert all(count == 0 for count in violation_counts(done.stdout).values()), output
    rows = workflow_rows(done.stdout)
    _, started, completed, failed, unfinished = rows["total"]
    assert int(started) > 0 and unfinished == "0", output
    assert int(completed) + int(failed) == int(started), output
    assert rows["soak_doomed"][2] == "0" and rows["soak_chain"][3] == "0", output
    assert int(figure(done.stdout, "kills (SIGKILL)")) >= 3, output
    assert int(figure(done.stdout, "cron ticks")) >= 3, output
    rss = figure(done.stdout, "long-lived runner RSS, second half")
    assert re.fullmatch(r"[\d.]+ → [\d.]+ MiB \([+-][\d.]+%\)", rss), output


@pytest.fixture
def sqlite_tree(tree):
    """`tree` with the real checkout's sqlite build and virtualenv, so a soak in it builds nothing."""
    if not (ROOT / ".venvs" / "sqlite" / "bin" / "python").exists():
        pytest.fail(
            f"the sqlite backend is not installed in {ROOT / '.venvs'}; the pipeline suite runs "
            "after the backend suites in `angreal cloaca test`, which install it."
        )
    copy_installed_builds(tree)
    return tree


#: Faults injected into a copy of the tree: (file, text, replacement, the violation it must cause).
FAULTS = {
    # A task body that leaves its side effect twice, as if it had run again with no kill to excuse it.
    "duplicate side effect": (
        RUNNER,
        "            key, attempt = ledger.begin(ctx, task_id)\n            time.sleep(",
        "            key, attempt = ledger.begin(ctx, task_id)\n"
        '            if task_id == "c2":\n'
        '                ledger.write("start", key, task_id, attempt)\n'
        "            time.sleep(",
        "duplicate-side-effect",
    ),
    # An expectation the engine (rightly) does not meet: the doomed workflow must now complete.
    "broken expectation": (
        RUNNER,
        '"soak_doomed": Spec("Failed",',
        '"soak_doomed": Spec("Completed",',
        "wrong-status",
    ),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_soak_run_catches_an_injected_fault(sqlite_tree, fault):
    path, old, new, kind = FAULTS[fault]
    edit(sqlite_tree / path, old, new)
    done = run_angreal(sqlite_tree, "cloaca", "soak", "--backend", "sqlite", "--minutes", "0.15", timeout=400)
    output = done.stdout + done.stderr
    flat = " ".join(done.stderr.split())
    kept = re.search(r"kept in (\S+)\.", flat)
    if kept:
        shutil.rmtree(kept.group(1), ignore_errors=True)
    assert done.returncode == 1, output
    assert "Traceback" not in output
    counts = violation_counts(done.stdout)
    assert counts[kind] > 0, output
    assert {k for k, n in counts.items() if n} == {kind}, output
    assert f"the soak found violations: {kind} (" in flat, output
    assert f"\n{kind}: " in done.stdout, "the violations are listed by kind below the table"
