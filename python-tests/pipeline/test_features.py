"""The crate refuses to compile unless exactly one backend feature is enabled."""

import shutil
import subprocess

import pytest

from cloaca_pipeline import lint  # the pipeline package lives in .angreal/
from conftest import BACKENDS, IN_CHECKOUT, ROOT

CRATE = ROOT / "cloaca-backend"
#: cargo reads the checkout's rendered Cargo.toml, which other commands of the suite rewrite.
pytestmark = IN_CHECKOUT


def cargo_check(*feature_args):
    # lint's check-mode target directory and environment: apart from the
    # wheels' builds, which these checks must not disturb, and holding the
    # dependencies clippy already checked (`lint` runs before `test` in CI).
    env = lint.clippy_environment()
    return subprocess.run(
        ["cargo", "check", "--lib", "--message-format=short", *feature_args],
        cwd=CRATE,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module", autouse=True)
def rendered_manifest():
    if shutil.which("cargo") is None or not (CRATE / "Cargo.toml").exists():
        pytest.fail(
            "needs cargo and a generated cloaca-backend/Cargo.toml: the pipeline suite "
            "runs after the backend suites in `angreal cloaca test`, which generate it."
        )


def test_both_backend_features_is_a_compile_error():
    done = cargo_check("--features", ",".join(BACKENDS))
    assert done.returncode != 0
    assert "the features `sqlite` and `postgres` are mutually exclusive" in done.stderr


def test_no_backend_feature_is_a_compile_error():
    done = cargo_check()
    assert done.returncode != 0
    assert "enable exactly one backend feature, `sqlite` or `postgres`" in done.stderr


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_backend_feature_compiles(backend):
    done = cargo_check("--features", backend)
    assert done.returncode == 0, done.stderr
