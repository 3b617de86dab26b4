"""`dist`: the wheelhouse, dist/: every backend's release wheel and the dispatcher's wheel.

The backend wheels are the release builds of build.py (the ones `bench`
installs), so a backend already built with `--release` is copied, not built
again. The dispatcher is pure Python and the same for every backend; its wheel
is made with `pip wheel` and rebuilt only when its sources change. dist/ then
holds exactly one wheel of each, and `pip install --no-index --find-links dist
'cloaca[sqlite]'` installs from it with no index at all.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cloaca_pipeline import build, project, toolchain, venvs
from cloaca_pipeline.errors import PipelineError

DIST_DIR = project.ROOT / "dist"
#: The distribution name of the dispatcher, as its wheel file starts.
DISPATCHER_WHEEL_PREFIX = "cloaca-"
#: The dispatcher wheel last built, kept beside the backends' build records.
DISPATCHER_WHEEL_DIR = project.STATE_DIR / "dispatcher-wheel"
DISPATCHER_RECORD = project.STATE_DIR / "dispatcher-wheel.json"


@dataclass(frozen=True)
class Wheelhouse:
    """What `build_wheelhouse` put into dist/, and which builds it could skip."""

    wheels: list[Path]
    skipped: list[str]
    seconds: float


def our_wheels(directory: Path) -> list[Path]:
    """The wheels of cloaca (dispatcher and every backend) in `directory`."""
    names = [DISPATCHER_WHEEL_PREFIX, *(f"{project.extension_module(b)}-" for b in project.facts().backends)]
    return sorted(p for p in directory.glob("*.whl") if p.name.startswith(tuple(names)))


def dispatcher_wheel() -> tuple[Path, bool]:
    """The dispatcher's wheel and whether building it was skipped (sources unchanged)."""
    # The dispatcher's pyproject.toml and _build_info.py are rendered; build.py has
    # written them for every backend by now, and they are the same for all of them.
    digest = venvs.dispatcher_digest()
    try:
        record = json.loads(DISPATCHER_RECORD.read_text())
    except (OSError, ValueError):
        record = {}
    recorded = DISPATCHER_WHEEL_DIR / record.get("wheel", "-")
    if record.get("digest") == digest and recorded.is_file():
        return recorded, True
    DISPATCHER_RECORD.unlink(missing_ok=True)
    shutil.rmtree(DISPATCHER_WHEEL_DIR, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="cloaca-dispatcher-wheel-") as tmp:
        toolchain.run(
            [project.PYTHON, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", tmp, project.DISPATCHER_DIR],
            env=toolchain.build_environment(),
            what="pip wheel of the dispatcher package cloaca",
            advice="pip's message above says what went wrong (it needs setuptools from the index).",
        )
        built = list(Path(tmp).glob(f"{DISPATCHER_WHEEL_PREFIX}*.whl"))
        if len(built) != 1:
            raise PipelineError(f"pip wheel made {[p.name for p in built]} instead of one cloaca wheel.")
        DISPATCHER_WHEEL_DIR.mkdir(parents=True)
        wheel = Path(shutil.copy2(built[0], DISPATCHER_WHEEL_DIR))
    DISPATCHER_RECORD.write_text(json.dumps({"digest": digest, "wheel": wheel.name}))
    return wheel, False


def build_wheelhouse() -> Wheelhouse:
    """Build (or reuse) every release wheel and the dispatcher's, then make dist/ hold exactly those."""
    started = time.monotonic()
    wanted, skipped = [], []
    for backend in project.facts().backends:
        built = build.build_backend_wheel(backend, release=True)
        wanted.append(built.wheel)
        if built.skipped:
            skipped.append(built.wheel.name)
    wheel, was_skipped = dispatcher_wheel()
    wanted.append(wheel)
    if was_skipped:
        skipped.append(wheel.name)
    DIST_DIR.mkdir(exist_ok=True)
    # Wheels of an older version or build would let pip pick the wrong one.
    for stale in our_wheels(DIST_DIR):
        stale.unlink()
    copied = [Path(shutil.copy2(w, DIST_DIR)) for w in wanted]
    return Wheelhouse(copied, skipped, time.monotonic() - started)
