"""`angreal cloaca generate`: what it writes, where, and what it refuses."""

import json
import tomllib

import pytest

from conftest import BACKENDS, edit, git, run_angreal

GENERATED = {
    "cloaca-backend/Cargo.toml": "templates/backend_cargo.toml.j2",
    "cloaca-backend/pyproject.toml": "templates/backend_pyproject.toml.j2",
    "cloaca-backend/python/cloaca_{b}/__init__.py": "templates/python/cloaca_{{backend}}/__init__.py.j2",
    "cloaca/pyproject.toml": "templates/dispatcher_pyproject.toml.j2",
    "cloaca/src/cloaca/_build_info.py": "templates/dispatcher_build_info.py.j2",
    "cloaca-backend/python/cloaca_{b}/__init__.pyi": "templates/python/cloaca_{{backend}}/__init__.pyi.j2",
    "cloaca-backend/python/cloaca_{b}/py.typed": "templates/python/cloaca_{{backend}}/py.typed.j2",
    "cloaca/src/cloaca/__init__.pyi": "templates/dispatcher_init.pyi.j2",
    "cloaca/src/cloaca/py.typed": "templates/dispatcher_py.typed.j2",
}


def test_generate_writes_each_file_with_a_header_naming_its_template(tree):
    done = run_angreal(tree, "cloaca", "generate", "--backend", "sqlite")
    assert done.returncode == 0, done.stderr
    for destination, template in GENERATED.items():
        path = tree / destination.format(b="sqlite")
        first_line = path.read_text().splitlines()[0]
        assert f"generated from {template}" in first_line
        assert "do not edit" in first_line


def test_generated_files_are_ignored_by_git_and_recorded(tree):
    run_angreal(tree, "cloaca", "generate", "--backend", "postgres")
    assert git(tree, "status", "--porcelain") == ""
    manifest = json.loads((tree / ".cloaca-generated.json").read_text())
    assert set(manifest["files"]) == {d.format(b="postgres") for d in GENERATED}


def test_names_follow_the_backend(tree):
    for backend in BACKENDS:
        assert run_angreal(tree, "cloaca", "generate", "--backend", backend).returncode == 0
        cargo = tomllib.loads((tree / "cloaca-backend/Cargo.toml").read_text())
        pyproject = tomllib.loads((tree / "cloaca-backend/pyproject.toml").read_text())
        assert cargo["lib"]["name"] == f"cloaca_{backend}"
        assert cargo["lib"]["crate-type"][0] == "cdylib"
        assert pyproject["project"]["name"] == f"cloaca-{backend}"
        assert pyproject["tool"]["maturin"]["module-name"] == f"cloaca_{backend}"
        assert pyproject["tool"]["maturin"]["features"] == [backend]
        assert pyproject["tool"]["maturin"]["python-source"] == "python"


def test_the_one_version_flows_into_every_rendered_file(tree):
    edit(tree / "pyproject.toml", 'version = "0.1.0"', 'version = "9.8.7"')
    assert run_angreal(tree, "cloaca", "generate", "--backend", "sqlite").returncode == 0
    cargo = tomllib.loads((tree / "cloaca-backend/Cargo.toml").read_text())
    backend = tomllib.loads((tree / "cloaca-backend/pyproject.toml").read_text())
    dispatcher = tomllib.loads((tree / "cloaca/pyproject.toml").read_text())
    assert cargo["package"]["version"] == "9.8.7"
    assert backend["project"]["version"] == "9.8.7"
    assert dispatcher["project"]["version"] == "9.8.7"
    assert dispatcher["project"]["optional-dependencies"] == {
        "sqlite": ["cloaca-sqlite==9.8.7"],
        "postgres": ["cloaca-postgres==9.8.7"],
    }
    assert 'VERSION = "9.8.7"' in (tree / "cloaca/src/cloaca/_build_info.py").read_text()


def test_an_unchanged_file_is_not_rewritten(tree):
    run_angreal(tree, "cloaca", "generate", "--backend", "sqlite")
    cargo = tree / "cloaca-backend/Cargo.toml"
    before = cargo.stat().st_mtime_ns
    run_angreal(tree, "cloaca", "generate", "--backend", "sqlite")
    assert cargo.stat().st_mtime_ns == before


@pytest.mark.parametrize(
    "destination, content",
    [
        ("cloaca-backend/Cargo.toml", "# my own hand-written manifest\n"),
        # Mentioning the header text below the first lines does not make a file generated.
        ("cloaca/pyproject.toml", "[project]\nname = 'mine'\n# notes: generated from templates/ elsewhere\n"),
    ],
)
def test_refuses_to_overwrite_a_file_it_did_not_write(tree, destination, content):
    mine = tree / destination
    mine.write_text(content)
    done = run_angreal(tree, "cloaca", "generate", "--backend", "sqlite")
    assert done.returncode == 2
    assert f"{destination} exists and was not written by" in done.stderr
    assert mine.read_text() == content


def test_unknown_backend_is_a_clear_error(tree):
    done = run_angreal(tree, "cloaca", "generate", "--backend", "mysql")
    assert done.returncode == 2
    assert "Unknown backend 'mysql'" in done.stderr
    assert "sqlite, postgres" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert not (tree / "cloaca-backend/Cargo.toml").exists()


def test_stubs_carry_backend_only_names_where_pyproject_says(tree):
    def stubs_after_generate(backend):
        assert run_angreal(tree, "cloaca", "generate", "--backend", backend).returncode == 0
        own = (tree / f"cloaca-backend/python/cloaca_{backend}/__init__.pyi").read_text()
        return own, (tree / "cloaca/src/cloaca/__init__.pyi").read_text()

    sqlite, dispatcher = stubs_after_generate("sqlite")
    postgres, _ = stubs_after_generate("postgres")
    assert "class DatabaseAdmin" not in sqlite and '"DatabaseAdmin"' not in sqlite
    assert "class DatabaseAdmin" in postgres and '"DatabaseAdmin"' in postgres
    # The dispatcher may stand for either backend: it carries every name.
    assert "class DatabaseAdmin" in dispatcher and "class DefaultRunner" in dispatcher

    # Declared for neither backend, the name is common to both.
    edit(tree / "pyproject.toml", 'postgres = ["DatabaseAdmin", ', "postgres = [")
    sqlite, _ = stubs_after_generate("sqlite")
    assert "class DatabaseAdmin" in sqlite
