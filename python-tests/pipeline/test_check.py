"""`angreal cloaca check`: each failure mode, injected into a copy of the tree, is reported
with the file to fix; the unbroken tree passes."""

import shutil

import pytest

from conftest import edit, run_angreal

WRAPPER_TEMPLATE = "templates/python/cloaca_{{backend}}/__init__.py.j2"


def check(tree):
    done = run_angreal(tree, "cloaca", "check")
    return done.returncode, done.stdout + done.stderr


def test_the_unbroken_tree_passes(built_tree):
    status, output = check(built_tree)
    assert status == 0, output
    assert "the chain is intact" in output


def test_cargo_lib_name_differs_from_module_name(built_tree):
    edit(built_tree / "templates/backend_cargo.toml.j2",
         'name = "cloaca_{{ backend }}"', 'name = "cloaca_{{ backend }}_core"')
    status, output = check(built_tree)
    assert status == 1
    assert "Cargo.toml [lib] name is 'cloaca_sqlite_core' but must be 'cloaca_sqlite'" in output
    assert "fix: templates/backend_cargo.toml.j2" in output


def test_pyproject_module_name_differs_from_lib_name(built_tree):
    edit(built_tree / "templates/backend_pyproject.toml.j2",
         'module-name = "cloaca_{{ backend }}"', 'module-name = "cloaca.{{ backend }}"')
    status, output = check(built_tree)
    assert status == 1
    assert "module-name is 'cloaca.postgres' but must be 'cloaca_postgres'" in output
    assert "fix: templates/backend_pyproject.toml.j2" in output


def test_pymodule_name_differs_from_lib_name(built_tree):
    edit(built_tree / "cloaca-backend/src/lib.rs", "fn cloaca_sqlite(", "fn cloaca_sqlite_module(")
    status, output = check(built_tree)
    assert status == 1
    assert "no #[pymodule] fn cloaca_sqlite is compiled with feature 'sqlite'" in output
    assert "fix: cloaca-backend/src/lib.rs" in output


def test_symbol_missing_from_the_wrapper(built_tree):
    # The classic hand-maintained wrapper that forgot a class.
    edit(built_tree / WRAPPER_TEMPLATE,
         "from .cloaca_{{ backend }} import *  # noqa: F401,F403  (exactly the extension's __all__)\n\n"
         "__all__ = list(_extension.__all__)",
         "from .cloaca_{{ backend }} import hello_world, get_backend, __version__, __backend__\n\n"
         "__all__ = ['hello_world', 'get_backend', '__version__', '__backend__']")
    status, output = check(built_tree)
    assert status == 1
    assert "'HelloClass' is registered by the Rust extension but missing from the wrapper" in output
    assert f"fix: {WRAPPER_TEMPLATE}" in output


def test_symbol_missing_from_the_dispatcher(built_tree):
    edit(built_tree / "cloaca/src/cloaca/__init__.py",
         "for name in _backend.__all__}", "for name in _backend.__all__ if name != 'hello_world'}")
    status, output = check(built_tree)
    assert status == 1
    assert "'hello_world' is registered by the Rust extension but missing from the dispatcher" in output
    assert "fix: cloaca/src/cloaca/__init__.py" in output


def test_symbol_registered_in_rust_but_not_built(built_tree):
    edit(built_tree / "cloaca-backend/src/python/mod.rs",
         "m.add_class::<smoke::HelloClass>()?;",
         'm.add_class::<smoke::HelloClass>()?;\n    m.add("NEW_CONSTANT", 1)?;')
    status, output = check(built_tree)
    assert status == 1
    assert "was not built from the current Rust sources" in output
    assert "fix: rebuild: angreal cloaca build --backend sqlite" in output


def test_wheel_expected_in_the_wrong_folder(built_tree):
    wrong = built_tree / "target" / "wheels"
    shutil.move(built_tree / "cloaca-backend/target/wheels", wrong)
    status, output = check(built_tree)
    assert status == 1
    assert "a wheel lies at target/wheels/cloaca_sqlite-" in output
    assert "installs from cloaca-backend/target/wheels" in output
    assert "fix: delete target/wheels/cloaca_postgres-" in output
    assert "but it is not there" in output


def test_backends_differ_by_an_undeclared_symbol(built_tree):
    edit(built_tree / "cloaca-backend/src/python/mod.rs",
         "m.add_class::<smoke::HelloClass>()?;",
         'm.add_class::<smoke::HelloClass>()?;\n    #[cfg(feature = "postgres")]\n'
         '    m.add("POSTGRES_ONLY_FLAG", true)?;')
    status, output = check(built_tree)
    assert status == 1
    assert ("'POSTGRES_ONLY_FLAG' is registered in postgres but not sqlite, and it is not "
            "declared backend-only") in output
    assert "fix: pyproject.toml" in output

    # Declared, the difference is allowed (only the stale build remains to fix).
    edit(built_tree / "pyproject.toml", "postgres = []", 'postgres = ["POSTGRES_ONLY_FLAG"]')
    status, output = check(built_tree)
    assert "not declared backend-only" not in output
    assert "was not built from the current Rust sources" in output


def test_a_declared_backend_only_symbol_present_on_both(built_tree):
    edit(built_tree / "pyproject.toml", "postgres = []", 'postgres = ["hello_world"]')
    status, output = check(built_tree)
    assert status == 1
    assert "'hello_world' is declared postgres-only but is registered in sqlite too" in output


def test_a_declared_backend_only_symbol_nobody_registers(built_tree):
    edit(built_tree / "pyproject.toml", "sqlite = []", 'sqlite = ["SQLITE_PRAGMAS"]')
    status, output = check(built_tree)
    assert status == 1
    assert "'SQLITE_PRAGMAS' is declared sqlite-only in [tool.cloaca.backend-only] but sqlite does not register it" in output


def test_exported_symbol_without_a_test(built_tree):
    for path in (built_tree / "python-tests").glob("test_*.py"):
        path.write_text(path.read_text().replace("hello_world", "greeting_function"))
    status, output = check(built_tree)
    assert status == 1
    assert "'hello_world' is exported but no test in python-tests/ mentions it" in output
    assert "fix: python-tests/test_basic.py" in output


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_check_reads_names_for_each_backend(built_tree, backend):
    edit(built_tree / "cloaca-backend/src/lib.rs", f"fn cloaca_{backend}(", f"fn cloaca_{backend}_x(")
    status, output = check(built_tree)
    assert f"[{backend}] no #[pymodule] fn cloaca_{backend}" in output
    other = {"sqlite": "postgres", "postgres": "sqlite"}[backend]
    assert f"[{other}] no #[pymodule]" not in output
