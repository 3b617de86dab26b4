"""`angreal cloaca check`: each failure mode, injected into a copy of the tree, is reported
with the file to fix; the unbroken tree passes."""

import shutil

import pytest

from conftest import BACKENDS, edit, run_angreal

WRAPPER_TEMPLATE = "templates/python/cloaca_{{backend}}/__init__.py.j2"
MOD_RS = "cloaca-backend/src/python/mod.rs"
STUB_TEMPLATE = "templates/python/cloaca_{{backend}}/__init__.pyi.j2"
API_DOC = "docs/api.md"
EXECUTE_IN_API_DOC = "DefaultRunner.execute(workflow_name: str, context: _ContextInput = None, idempotency_key: str | None = None) -> PipelineResult"  # noqa: E501
LAST_REGISTRATION = "m.add_class::<smoke::HelloClass>()?;"


def check(tree):
    done = run_angreal(tree, "cloaca", "check")
    return done.returncode, done.stdout + done.stderr


def test_the_unbroken_tree_passes(built_tree):
    status, output = check(built_tree)
    assert status == 0, output
    assert "the chain is intact" in output


# Each failure mode: the edits that inject it (file, old, new) and what check must say.
FAILURE_MODES = {
    "cargo lib name differs from module-name": (
        [("templates/backend_cargo.toml.j2", 'name = "cloaca_{{ backend }}"', 'name = "cloaca_{{ backend }}_core"')],
        [
            "Cargo.toml [lib] name is 'cloaca_sqlite_core' but must be 'cloaca_sqlite'",
            "fix: templates/backend_cargo.toml.j2",
        ],
    ),
    "pyproject module-name differs from lib name": (
        [
            (
                "templates/backend_pyproject.toml.j2",
                'module-name = "cloaca_{{ backend }}"',
                'module-name = "cloaca.{{ backend }}"',
            )
        ],
        ["module-name is 'cloaca.postgres' but must be 'cloaca_postgres'", "fix: templates/backend_pyproject.toml.j2"],
    ),
    "pymodule name differs from lib name": (
        [("cloaca-backend/src/lib.rs", "fn cloaca_sqlite(", "fn cloaca_sqlite_module(")],
        ["no #[pymodule] fn cloaca_sqlite is compiled with feature 'sqlite'", "fix: cloaca-backend/src/lib.rs"],
    ),
    "symbol missing from the wrapper": (
        # The classic hand-maintained wrapper that forgot a class.
        [
            (
                WRAPPER_TEMPLATE,
                "from .cloaca_{{ backend }} import *  # noqa: F401,F403  (exactly the extension's __all__)\n\n"
                "__all__ = list(_extension.__all__)",
                "from .cloaca_{{ backend }} import hello_world, get_backend, __version__, __backend__\n\n"
                "__all__ = ['hello_world', 'get_backend', '__version__', '__backend__']",
            )
        ],
        ["'HelloClass' is registered by the Rust extension but missing from the wrapper", f"fix: {WRAPPER_TEMPLATE}"],
    ),
    "symbol missing from the dispatcher": (
        [
            (
                "cloaca/src/cloaca/__init__.py",
                "for name in _backend.__all__}",
                "for name in _backend.__all__ if name != 'hello_world'}",
            )
        ],
        [
            "'hello_world' is registered by the Rust extension but missing from the dispatcher",
            "fix: cloaca/src/cloaca/__init__.py",
        ],
    ),
    "symbol registered in Rust but not built": (
        [(MOD_RS, LAST_REGISTRATION, LAST_REGISTRATION + '\n    m.add("NEW_CONSTANT", 1)?;')],
        ["was not built from the current Rust sources", "fix: rebuild: angreal cloaca build --backend sqlite"],
    ),
    "declared backend-only symbol present on both": (
        [("pyproject.toml", "postgres = [", 'postgres = ["hello_world", ')],
        ["'hello_world' is declared postgres-only but is registered in sqlite too"],
    ),
    "declared backend-only symbol nobody registers": (
        [("pyproject.toml", "sqlite = []", 'sqlite = ["SQLITE_PRAGMAS"]')],
        ["'SQLITE_PRAGMAS' is declared sqlite-only in [tool.cloaca.backend-only] but sqlite does not register it"],
    ),
    "stub signature differs from the extension": (
        [(STUB_TEMPLATE, "    def get_message(self) -> str:", "    def get_message(self, loud: bool) -> str:")],
        [
            "[sqlite] stubtest: cloaca_sqlite.HelloClass.get_message is inconsistent",
            "[postgres] stubtest: cloaca.HelloClass.get_message is inconsistent",
            f"fix: {STUB_TEMPLATE}",
        ],
    ),
    "symbol missing from the stub": (
        [(STUB_TEMPLATE, "def hello_world() -> str:", "def hello_world_renamed() -> str:")],
        [
            "[sqlite] stubtest: cloaca_sqlite.hello_world is not present in stub",
            "[postgres] stubtest: cloaca.hello_world is not present in stub",
            f"fix: {STUB_TEMPLATE}",
        ],
    ),
    "backend-only name in the other backend's stub": (
        [(STUB_TEMPLATE, '{%- if exported("TenantConfig") %}\n\n@final', "{%- if true %}\n\n@final")],
        ["[sqlite] stubtest: cloaca_sqlite.TenantConfig is not present at runtime", f"fix: {STUB_TEMPLATE}"],
    ),
    "stub that does not type-check": (
        [(STUB_TEMPLATE, "def get_leaves(self) -> list[str]:", "def get_leaves(self) -> list[Leaf]:")],
        ["stubtest: not checking stubs due to mypy build errors", 'Name "Leaf" is not defined'],
    ),
    "api.md signature differs from the stub": (
        [(API_DOC, EXECUTE_IN_API_DOC, EXECUTE_IN_API_DOC.replace("workflow_name: str", "workflow: str"))],
        ["docs/api.md shows `DefaultRunner.execute` as", "but the stub", f"fix: {API_DOC}"],
    ),
    "stub changed but api.md not": (
        [(STUB_TEMPLATE, "def get_execution(self, execution_id: str)", "def get_execution(self, execution: str)")],
        ["docs/api.md shows `DefaultRunner.get_execution` as", f"fix: {API_DOC}", f"fix: {STUB_TEMPLATE}"],
    ),
    "method missing from api.md": (
        [(API_DOC, "#### `Workflow.get_roots`", "#### Workflow roots")],
        ["docs/api.md has no entry `Workflow.get_roots`", f"fix: {API_DOC}"],
    ),
    "api.md documents what the stub lacks": (
        [(API_DOC, "#### `Workflow.get_roots`", "#### `Workflow.get_roots`\n\n#### `Workflow.get_trunk`")],
        ["docs/api.md documents `Workflow.get_trunk`, which the stub does not define"],
    ),
    "postgres-only name not marked in api.md": (
        [(API_DOC, "### `DatabaseAdmin` (postgres only)", "### `DatabaseAdmin`")],
        ["docs/api.md: the heading of `DatabaseAdmin` must say (postgres only)"],
    ),
    "api.md settings table differs from the extension": (
        [(API_DOC, "| `max_concurrent_tasks` | int | `4` |", "| `max_concurrent_tasks` | int | `8` |")],
        ["the settings table of docs/api.md differs from DefaultRunnerConfig", f"fix: {API_DOC}"],
    ),
    "example does not type-check": (
        [("examples/quickstart.py", "attempt = next_attempt(task_id)", "attempt = next_attempt(partition)")],
        ["mypy --strict: examples/quickstart.py:", 'Argument 1 to "next_attempt"', "fix: examples/quickstart.py"],
    ),
}


@pytest.mark.parametrize("mode", FAILURE_MODES)
def test_failure_mode_is_reported_with_the_file_to_fix(built_tree, mode):
    edits, expected = FAILURE_MODES[mode]
    for path, old, new in edits:
        edit(built_tree / path, old, new)
    status, output = check(built_tree)
    assert status == 1, output
    for phrase in expected:
        assert phrase in output


def test_wheel_expected_in_the_wrong_folder(built_tree):
    # The wheelhouse `dist` fills is a place wheels belong, and says nothing.
    (built_tree / "dist").mkdir()
    for wheel in (built_tree / "cloaca-backend/target/wheels").glob("cloaca_*.whl"):
        shutil.copy2(wheel, built_tree / "dist")
    wrong = built_tree / "target" / "wheels"
    shutil.move(built_tree / "cloaca-backend/target/wheels", wrong)
    status, output = check(built_tree)
    assert status == 1
    assert "lies at dist/" not in output, output
    assert "a wheel lies at target/wheels/cloaca_sqlite-" in output
    assert "installs from cloaca-backend/target/wheels" in output
    assert "fix: delete target/wheels/cloaca_postgres-" in output
    assert "but it is not there" in output


def test_backends_differ_by_an_undeclared_symbol(built_tree):
    edit(
        built_tree / MOD_RS,
        LAST_REGISTRATION,
        LAST_REGISTRATION + '\n    #[cfg(feature = "postgres")]\n    m.add("POSTGRES_ONLY_FLAG", true)?;',
    )
    status, output = check(built_tree)
    assert status == 1
    assert (
        "'POSTGRES_ONLY_FLAG' is registered in postgres but not sqlite, and it is not declared backend-only"
    ) in output
    assert "fix: pyproject.toml" in output

    # Declared, the difference is allowed (only the stale build remains to fix).
    edit(built_tree / "pyproject.toml", "postgres = [", 'postgres = ["POSTGRES_ONLY_FLAG", ')
    status, output = check(built_tree)
    assert "not declared backend-only" not in output
    assert "was not built from the current Rust sources" in output


def test_exported_symbol_without_a_test(built_tree):
    for path in (built_tree / "python-tests").glob("test_*.py"):
        path.write_text(path.read_text().replace("hello_world", "greeting_function"))
    status, output = check(built_tree)
    assert status == 1
    assert "'hello_world' is exported but no test in python-tests/ mentions it" in output
    assert "fix: python-tests/test_basic.py" in output


@pytest.mark.parametrize("backend", BACKENDS)
def test_check_reads_names_for_each_backend(built_tree, backend):
    edit(built_tree / "cloaca-backend/src/lib.rs", f"fn cloaca_{backend}(", f"fn cloaca_{backend}_x(")
    status, output = check(built_tree)
    assert f"[{backend}] no #[pymodule] fn cloaca_{backend}" in output
    for other in set(BACKENDS) - {backend}:
        assert f"[{other}] no #[pymodule]" not in output
