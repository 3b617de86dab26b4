"""The dispatcher's backend selection and its error paths, each in a fresh interpreter."""

import json

from cloaca._build_info import BACKENDS, VERSION

# Setting sys.modules[name] = None makes `import name` raise ModuleNotFoundError
# exactly as if the package were not installed, without touching the venv.
HIDE_BACKENDS = "import sys\n" + "".join(f"sys.modules['cloaca_{b}'] = None\n" for b in BACKENDS)


def test_detects_the_installed_backend(run_python, backend):
    done = run_python("import cloaca, json; print(json.dumps([cloaca.get_backend(), cloaca.__all__]))")
    assert done.returncode == 0, done.stderr
    chosen, exported = json.loads(done.stdout)
    assert chosen == backend
    assert "hello_world" in exported


def test_forcing_the_installed_backend_works(run_python, backend):
    done = run_python("import cloaca; print(cloaca.get_backend())", CLOACA_BACKEND=backend)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == backend


def test_no_backend_installed_lists_every_attempt_and_both_fixes(run_python):
    done = run_python(HIDE_BACKENDS + "import cloaca")
    assert done.returncode != 0
    assert "ImportError: No cloaca backend is installed" in done.stderr
    for b in BACKENDS:
        assert f"cloaca_{b} (not installed)" in done.stderr
        assert f"pip install 'cloaca[{b}]=={VERSION}'" in done.stderr
    # The order of attempts is the documented order.
    positions = [done.stderr.index(f"cloaca_{b} (not installed)") for b in BACKENDS]
    assert positions == sorted(positions)


def test_forced_backend_that_is_not_installed_is_named(run_python, other_backends):
    for other in other_backends:
        done = run_python("import cloaca", CLOACA_BACKEND=other)
        assert done.returncode != 0
        assert f"CLOACA_BACKEND={other} asks for the {other} backend" in done.stderr
        assert f"cloaca_{other} is not installed" in done.stderr
        assert f"pip install 'cloaca[{other}]=={VERSION}'" in done.stderr


def test_unknown_backend_value_is_a_value_error_and_an_import_error(run_python):
    done = run_python(
        "try:\n    import cloaca\nexcept ImportError as e:\n    print(isinstance(e, ValueError), e)\n",
        CLOACA_BACKEND="mysql",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("True ")
    assert "CLOACA_BACKEND='mysql' is not a cloaca backend" in done.stdout
    for b in BACKENDS:
        assert b in done.stdout


def test_version_mismatch_is_refused(run_python, backend):
    done = run_python(f"import cloaca_{backend} as b; b.__version__ = '999.0.0'\nimport cloaca")
    assert done.returncode != 0
    assert f"cloaca {VERSION} found cloaca_{backend} 999.0.0" in done.stderr
    assert "must be the same version" in done.stderr


def test_a_broken_backend_is_reported_not_skipped(run_python, backend):
    """An installed backend that fails to import must surface, not fall back to another."""
    done = run_python(
        "import sys, importlib.abc\n"
        "class Broken(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        f"        if name == 'cloaca_{backend}.cloaca_{backend}':\n"
        "            raise ImportError('simulated broken extension')\n"
        "sys.meta_path.insert(0, Broken())\n"
        "import cloaca\n"
    )
    assert done.returncode != 0
    assert f"The {backend} backend (cloaca_{backend}) is installed but cannot be imported" in done.stderr
    assert "simulated broken extension" in done.stderr
