"""`angreal cloaca scrub`: removes what the pipeline made and nothing else."""

import os

from conftest import BACKENDS, git, run_angreal


def snapshot(root):
    """Every file under root (outside .git) with its content."""
    files = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for name in filenames:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, root)] = f.read()
    return files


def test_generate_then_scrub_leaves_a_clean_tree_exactly_as_it_was(tree):
    status_before, files_before = git(tree, "status", "--porcelain", "--ignored"), snapshot(tree)
    for backend in BACKENDS:
        assert run_angreal(tree, "cloaca", "generate", "--backend", backend).returncode == 0
    assert (tree / "cloaca-backend/python/cloaca_postgres/__init__.py").exists()
    done = run_angreal(tree, "cloaca", "scrub")
    assert done.returncode == 0, done.stderr
    assert git(tree, "status", "--porcelain", "--ignored") == status_before
    assert snapshot(tree) == files_before


def test_a_users_untracked_files_next_to_generated_ones_survive(tree):
    run_angreal(tree, "cloaca", "generate", "--backend", "sqlite")
    beside_wrapper = tree / "cloaca-backend/python/cloaca_sqlite/my_notes.txt"
    beside_manifest = tree / "cloaca-backend/my_script.py"
    beside_wrapper.write_text("keep me")
    beside_manifest.write_text("print('mine')")
    done = run_angreal(tree, "cloaca", "scrub")
    assert done.returncode == 0, done.stderr
    assert beside_wrapper.read_text() == "keep me"
    assert beside_manifest.read_text() == "print('mine')"
    assert not (tree / "cloaca-backend/python/cloaca_sqlite/__init__.py").exists()
    assert not (tree / "cloaca-backend/Cargo.toml").exists()


def test_a_generated_file_the_user_rewrote_without_the_header_is_kept(tree):
    run_angreal(tree, "cloaca", "generate", "--backend", "sqlite")
    build_info = tree / "cloaca/src/cloaca/_build_info.py"
    build_info.write_text("VERSION = 'mine'\n")
    assert run_angreal(tree, "cloaca", "scrub").returncode == 0
    assert build_info.read_text() == "VERSION = 'mine'\n"


def test_never_deletes_a_tracked_file_even_when_listed(tree):
    tracked = tree / "docs" / "tracked-note.txt"
    tracked.parent.mkdir(exist_ok=True)
    tracked.write_text("generated from templates/ (a tracked file that merely says so)\n")
    git(tree, "add", "-A")
    git(tree, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "note")
    (tree / ".cloaca-generated.json").write_text('{"files": {"docs/tracked-note.txt": "x"}, "directories": {}}')
    done = run_angreal(tree, "cloaca", "scrub")
    assert done.returncode == 2
    assert "git tracks it" in done.stderr
    assert tracked.exists()
    assert git(tree, "status", "--porcelain") == ""


def test_wheels_venvs_and_caches_go_and_deep_takes_the_target_dir(tree):
    wheel_dir = tree / "cloaca-backend/target/wheels"
    wheel_dir.mkdir(parents=True)
    (wheel_dir / "cloaca_sqlite-0.1.0-cp39-abi3-linux_x86_64.whl").write_bytes(b"wheel")
    (wheel_dir / "someone-elses-1.0-py3-none-any.whl").write_bytes(b"not ours")
    compiled = tree / "cloaca-backend/target/debug/libcloaca.rlib"
    compiled.parent.mkdir(parents=True)
    compiled.write_bytes(b"obj")
    (tree / ".venvs/sqlite/bin").mkdir(parents=True)
    (tree / "python-tests/__pycache__").mkdir()
    (tree / "python-tests/__pycache__/x.pyc").write_bytes(b"pyc")

    assert run_angreal(tree, "cloaca", "scrub").returncode == 0
    assert not (wheel_dir / "cloaca_sqlite-0.1.0-cp39-abi3-linux_x86_64.whl").exists()
    assert (wheel_dir / "someone-elses-1.0-py3-none-any.whl").exists()
    assert not (tree / ".venvs").exists()
    assert not (tree / "python-tests/__pycache__").exists()
    assert compiled.exists(), "the cargo target dir stays without --deep"

    assert run_angreal(tree, "cloaca", "scrub", "--deep").returncode == 0
    assert not (tree / "cloaca-backend/target").exists()
    assert git(tree, "status", "--porcelain") == ""


def test_the_wheelhouse_goes_but_a_users_file_in_dist_stays(tree):
    dist = tree / "dist"
    dist.mkdir()
    ours = [
        "cloaca-0.1.0-py3-none-any.whl",
        *(f"cloaca_{b}-0.1.0-cp39-abi3-linux_x86_64.whl" for b in BACKENDS),
    ]
    for name in ours:
        (dist / name).write_bytes(b"wheel")
    (dist / "someone-elses-1.0-py3-none-any.whl").write_bytes(b"not ours")
    done = run_angreal(tree, "cloaca", "scrub")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in dist.iterdir()) == ["someone-elses-1.0-py3-none-any.whl"]

    (dist / "someone-elses-1.0-py3-none-any.whl").unlink()
    (dist / ours[0]).write_bytes(b"wheel")
    assert run_angreal(tree, "cloaca", "scrub").returncode == 0
    assert not dist.exists(), "dist/ goes once only our wheels were in it"
    assert git(tree, "status", "--porcelain") == ""


def test_a_tracked_wheel_in_dist_is_never_deleted(tree):
    tracked = tree / "dist" / "cloaca-0.0.1-py3-none-any.whl"
    tracked.parent.mkdir()
    tracked.write_bytes(b"a wheel someone committed")
    git(tree, "add", "-f", "dist")
    git(tree, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "wheel")
    done = run_angreal(tree, "cloaca", "scrub")
    assert done.returncode == 2
    assert "git tracks it" in done.stderr
    assert tracked.read_bytes() == b"a wheel someone committed"
