"""`angreal cloaca lint`: each tool's failure is detected and named with its fix.

Faults are injected into a copy of the tree (the `tree` fixture), never into
the checkout. The ruff and rustfmt steps run one at a time from the copy's own
pipeline package, so no test but the last compiles anything. The last runs the
whole command once (clippy once per backend) with a fault for every tool; the
copy borrows the checkout's clippy target directory, so only the crate itself
is checked again, not its dependencies.
"""

import shutil
import subprocess
import sys

import pytest

from conftest import BACKENDS, ROOT, base_env, edit, run_angreal

sys.path.insert(0, str(ROOT / ".angreal"))
from cloaca_pipeline import lint  # the pipeline package lives in .angreal/

DEMO = ".angreal/cloaca_pipeline/demo.py"
LIB_RS = "cloaca-backend/src/lib.rs"


def lint_step(tree, step):
    """Run one step of the copy's lint module in a fresh interpreter: (passed, its output)."""
    code = (
        f"import sys; sys.path.insert(0, {str(tree / '.angreal')!r})\n"
        "from cloaca_pipeline import lint\n"
        f"r = lint.{step}()\n"
        "print('RESULT', 'passed' if r.passed else 'FAILED', r.name, '|', r.fix)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tree, env=base_env(), capture_output=True, text=True, timeout=300
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    result = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(result) == 1, output
    return result[0].startswith("RESULT passed"), output


def test_ruff_check_finds_an_unused_import(tree):
    # Other findings may exist while someone works on the tree; this one must be new.
    assert "demo.py" not in lint_step(tree, "ruff_check")[1]
    edit(tree / DEMO, "import subprocess\n", "import subprocess\nimport textwrap\n")
    passed, output = lint_step(tree, "ruff_check")
    assert not passed, output
    assert "F401" in output and "demo.py" in output, output
    assert "RESULT FAILED ruff check | run `ruff check --fix .`" in output


def test_ruff_format_finds_an_unformatted_file(tree):
    assert "demo.py" not in lint_step(tree, "ruff_format")[1]
    edit(
        tree / DEMO,
        'QUICKSTART = project.EXAMPLES_DIR / "quickstart.py"',
        "QUICKSTART = project.EXAMPLES_DIR/'quickstart.py'",
    )
    passed, output = lint_step(tree, "ruff_format")
    assert not passed, output
    assert "--> .angreal/cloaca_pipeline/demo.py:" in output, output
    assert "RESULT FAILED ruff format | run `ruff format .`" in output


def test_rustfmt_finds_an_unformatted_rust_file(tree):
    with open(tree / LIB_RS, "a") as f:
        f.write("\nfn   lint_probe ( )   {   }\n")
    passed, output = lint_step(tree, "rustfmt")
    assert not passed, output
    # rustfmt's own diff of the injected line, not some other formatting problem.
    assert "Diff in" in output and "lib.rs" in output and "lint_probe" in output, output
    assert "RESULT FAILED cargo fmt | run `cargo fmt --manifest-path cloaca-backend/Cargo.toml`" in output


@pytest.mark.parametrize("backend", BACKENDS)
def test_clippy_command_denies_warnings_on_all_targets_with_one_feature(backend):
    command = [str(c) for c in lint.clippy_command(backend)]
    assert command[:2] == ["cargo", "clippy"]
    assert command[-3:] == ["--", "-D", "warnings"]
    assert "--all-targets" in command
    assert command[command.index("--features") + 1] == backend
    assert lint.clippy_environment()["CARGO_TARGET_DIR"] == str(lint.LINT_TARGET_DIR)


def test_every_tool_runs_and_clippy_once_per_backend(monkeypatch):
    ran, generated = [], []
    monkeypatch.setattr(lint.render, "generate", generated.append)

    def fake_run_tool(name, command, fix, **kwargs):
        ran.append((name, [str(c) for c in command]))
        return lint.LintResult(name, True, fix, 0.0)

    monkeypatch.setattr(lint, "run_tool", fake_run_tool)
    lint.run_all()
    names = [name for name, _ in ran]
    assert names == ["cargo fmt", *(f"cargo clippy ({b})" for b in BACKENDS), "ruff check", "ruff format"]
    assert ran[0][1][:3] == ["cargo", "fmt", "--check"]
    assert ran[-2][1] == ["ruff", "check", "."]
    assert ran[-1][1] == ["ruff", "format", "--check", "."]
    # The Cargo.toml is rendered before cargo reads it, for each backend before its clippy.
    assert set(BACKENDS) <= set(generated)


def test_missing_ruff_exits_2_naming_it(tree, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("python", "git", "cargo", "rustc"):
        (bin_dir / name).symlink_to(shutil.which(name))
    done = run_angreal(tree, "cloaca", "lint", env=base_env(PATH=str(bin_dir)))
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output
    assert "`ruff` was not found on PATH" in " ".join(done.stderr.split()), output
    assert "==>" not in done.stdout, "no tool may run before every tool is found"


def test_lint_names_every_failed_tool_and_its_fix(tree):
    """The whole command, once: a fault for each tool; clippy's only in the first backend."""
    first, others = BACKENDS[0], BACKENDS[1:]
    shared = ROOT / "cloaca-backend" / "target" / "lint"
    shared.mkdir(parents=True, exist_ok=True)
    (tree / "cloaca-backend" / "target").mkdir(parents=True, exist_ok=True)
    (tree / "cloaca-backend" / "target" / "lint").symlink_to(shared, target_is_directory=True)
    edit(tree / DEMO, "import subprocess\n", "import subprocess\nimport textwrap\n")
    with open(tree / LIB_RS, "a") as f:
        f.write(
            f'\n#[cfg(feature = "{first}")]\n#[allow(dead_code)]\nfn lint_probe() -> i32 {{\n    return 1;\n}}\n'
            "\n#[allow(dead_code)]\nfn   lint_probe_format ( )   {   }\n"
        )
    done = run_angreal(tree, "cloaca", "lint", timeout=1200)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "needless_return" in output, output
    paragraph = " ".join(done.stderr.split())
    assert "cloaca: error: lint failed:" in paragraph, output
    assert "cargo fmt: run `cargo fmt --manifest-path cloaca-backend/Cargo.toml`" in paragraph
    assert f"cargo clippy ({first}): fix what it reports above" in paragraph
    for other in others:
        assert f"cargo clippy ({other})" not in paragraph, "the probe is compiled only with the first feature"
    assert "ruff check: run `ruff check --fix .`" in paragraph
