"""`build`: generate, then one maturin build per backend, skipped when nothing changed.

A build's inputs are fingerprinted (backend, profile, interpreter, the
rendered files, the Rust sources and Cargo.lock); when the fingerprint matches
the one stored beside the backend's wheel, and that wheel is still there, the
build is skipped without starting cargo at all.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from cloaca_pipeline import project, render, toolchain
from cloaca_pipeline.errors import PipelineError


@dataclass(frozen=True)
class BuiltWheel:
    """The outcome of `build_backend_wheel`."""

    backend: str
    wheel: Path
    skipped: bool
    seconds: float


def wheel_dir(release: bool = False) -> Path:
    """Where a build's wheel goes: release wheels (for `bench`) apart from the
    debug wheels `test` installs, so that neither build replaces the other."""
    return project.WHEEL_DIR / "release" if release else project.WHEEL_DIR


def wheels_for(backend: str, directory: Path = project.WHEEL_DIR) -> list[Path]:
    """The wheels of one backend in `directory`."""
    return sorted(directory.glob(f"{project.extension_module(backend)}-*.whl"))


def fingerprint_path(backend: str, release: bool = False) -> Path:
    """Where the fingerprint of a backend's last successful build is kept."""
    return project.STATE_DIR / (f"build-{backend}-release.json" if release else f"build-{backend}.json")


def build_inputs() -> list[Path]:
    """Every file whose content a wheel depends on (rendered files included)."""
    files = [p for p in project.RUST_SOURCE_DIR.rglob("*") if p.is_file()]
    for extra in ("Cargo.lock", "build.rs"):
        if (project.BACKEND_DIR / extra).exists():
            files.append(project.BACKEND_DIR / extra)
    return sorted(files)


def compute_fingerprint(backend: str, release: bool, rendered: list[render.RenderedFile]) -> str:
    """A hash of everything that determines the wheel of `backend`."""
    h = hashlib.sha256()
    h.update(json.dumps({"backend": backend, "release": release, "tools": toolchain.tool_versions()}).encode())
    for f in rendered:
        h.update(project.relative(f.destination).encode() + b"\0" + f.text.encode() + b"\0")
    h.update(extension_fingerprint(rendered).encode())
    return h.hexdigest()


def extension_fingerprint(rendered: list[render.RenderedFile]) -> str:
    """A hash of what the compiled extension module alone depends on: Cargo.toml and Rust sources."""
    h = hashlib.sha256()
    for f in rendered:
        if f.template == render.CARGO_TEMPLATE:
            h.update(f.text.encode() + b"\0")
    for path in build_inputs():
        h.update(project.relative(path).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def stored_build_record(backend: str, release: bool = False) -> dict:
    """What the last successful build of `backend` recorded (empty if none)."""
    try:
        return json.loads(fingerprint_path(backend, release).read_text())
    except (OSError, ValueError):
        return {}


def build_backend_wheel(backend: str, *, release: bool = False) -> BuiltWheel:
    """Generate, then build the wheel of `backend` unless its inputs are unchanged."""
    started = time.monotonic()
    rendered = render.render_backend_templates(backend)
    render.write_rendered_files(rendered)
    fingerprint = compute_fingerprint(backend, release, rendered)
    out = wheel_dir(release)
    existing = wheels_for(backend, out)
    if len(existing) == 1 and stored_build_record(backend, release).get("fingerprint") == fingerprint:
        return BuiltWheel(backend, existing[0], True, time.monotonic() - started)

    run_maturin(backend, release)
    wheels = wheels_for(backend, out)
    if len(wheels) != 1:
        raise PipelineError(
            f"maturin finished but {project.relative(out)} holds "
            f"{len(wheels)} wheels for {backend} instead of one: {[w.name for w in wheels]}. "
            "Run `angreal cloaca scrub` and build again."
        )
    project.STATE_DIR.mkdir(parents=True, exist_ok=True)
    fingerprint_path(backend, release).write_text(
        json.dumps(
            {
                "fingerprint": fingerprint,
                "extension": extension_fingerprint(rendered),
                "wheel": wheels[0].name,
                "release": release,
            }
        )
    )
    return BuiltWheel(backend, wheels[0], False, time.monotonic() - started)


def run_maturin(backend: str, release: bool) -> None:
    """One maturin build of `backend` into its wheel_dir, leaving only the new wheel there."""
    toolchain.require_program("cargo")
    maturin = toolchain.require_program("maturin")
    fingerprint_path(backend, release).unlink(missing_ok=True)
    for old in wheels_for(backend, wheel_dir(release)):
        old.unlink()
    command = [
        maturin,
        "build",
        "--interpreter",
        project.PYTHON,
        "--out",
        wheel_dir(release),
        "--manifest-path",
        project.BACKEND_DIR / "Cargo.toml",
    ]
    if release:
        command.append("--release")
    toolchain.run(
        command,
        cwd=project.BACKEND_DIR,
        env=toolchain.build_environment(),
        what=f"maturin build of the {backend} backend",
        advice="Fix the Rust error shown above in cloaca-backend/src/ (or the template "
        "named in it), then run the command again.",
    )
