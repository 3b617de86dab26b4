"""`check`: verify the chain Rust -> extension -> wrapper -> dispatcher -> tests.

Static checks read the tree: the names Cargo.toml, pyproject.toml and the
`#[pymodule]` functions give each backend's module, and where wheels lie.
Runtime checks import, in the backend's virtualenv, the *installed* extension
module together with the wrapper and the dispatcher *as they are in the tree
now* (rendered in memory), and compare what each exports. Nothing is built or
written in the tree, so check can run on any copy of it. Every problem names
the file to fix.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

from cloaca_pipeline import build, project, render, venvs

LIB_RS = project.RUST_SOURCE_DIR / "lib.rs"
# The files a problem names, as paths from the root.
CARGO_TEMPLATE = f"templates/{render.CARGO_TEMPLATE}"
PYPROJECT_TEMPLATE = f"templates/{render.PYPROJECT_TEMPLATE}"
WRAPPER_TEMPLATE = f"templates/{render.WRAPPER_TEMPLATE}"
DISPATCHER_INIT = project.relative(project.DISPATCHER_PACKAGE_DIR / "__init__.py")
REGISTRATION = project.relative(project.RUST_SOURCE_DIR / "python" / "mod.rs")


@dataclass(frozen=True)
class Problem:
    """One broken link of the chain."""

    backend: str
    message: str
    fix: str  # the file to fix (or, where no file is wrong, what to run or delete)

    def __str__(self) -> str:
        return f"[{self.backend}] {self.message}\n    fix: {self.fix}"


# ----------------------------------------------------------------- static ---


def pymodule_functions(source: str) -> dict[str, str | None]:
    """`#[pymodule]` function name -> the cargo feature gating it (None: ungated)."""
    found = {}
    for attrs, name in re.findall(r"((?:#\[[^\]]*\]\s*)+)(?:pub(?:\([^)]*\))?\s+)?fn\s+(\w+)", source):
        if not re.search(r"#\[\s*(?:pyo3::)?pymodule\b", attrs):
            continue
        renamed = re.search(r'#\[\s*pyo3\s*\([^\]]*name\s*=\s*"([^"]+)"', attrs)
        feature = re.search(r'#\[\s*cfg\s*\(\s*feature\s*=\s*"([^"]+)"\s*\)\s*\]', attrs)
        found[renamed.group(1) if renamed else name] = feature.group(1) if feature else None
    return found


def check_module_names(backend: str, rendered: list[render.RenderedFile]) -> list[Problem]:
    """Cargo [lib] name == [tool.maturin] module-name == #[pymodule] name == cloaca_<backend>."""
    expected = project.extension_module(backend)
    by_template = {f.template: f.text for f in rendered}
    problems = []
    try:
        lib_name = tomllib.loads(by_template[render.CARGO_TEMPLATE]).get("lib", {}).get("name")
    except tomllib.TOMLDecodeError as exc:
        return [Problem(backend, f"the rendered Cargo.toml is not valid TOML: {exc}", CARGO_TEMPLATE)]
    try:
        maturin = tomllib.loads(by_template[render.PYPROJECT_TEMPLATE]).get("tool", {}).get("maturin", {})
    except tomllib.TOMLDecodeError as exc:
        return [Problem(backend, f"the rendered pyproject.toml is not valid TOML: {exc}", PYPROJECT_TEMPLATE)]
    if lib_name != expected:
        problems.append(
            Problem(
                backend,
                f"Cargo.toml [lib] name is {lib_name!r} but must be {expected!r} (Python imports PyInit_{expected})",
                CARGO_TEMPLATE,
            )
        )
    if maturin.get("module-name") != expected:
        problems.append(
            Problem(
                backend,
                f"pyproject.toml [tool.maturin] module-name is "
                f"{maturin.get('module-name')!r} but must be {expected!r}, the "
                "Cargo [lib] name",
                PYPROJECT_TEMPLATE,
            )
        )
    if backend not in maturin.get("features", []):
        problems.append(
            Problem(
                backend,
                f"pyproject.toml [tool.maturin] features are {maturin.get('features')!r}; they must enable {backend!r}",
                PYPROJECT_TEMPLATE,
            )
        )
    modules = pymodule_functions(LIB_RS.read_text(encoding="utf-8"))
    active = {name for name, feature in modules.items() if feature in (None, backend)}
    if expected not in active:
        problems.append(
            Problem(
                backend,
                f"no #[pymodule] fn {expected} is compiled with feature {backend!r}; "
                f"found {sorted(active) or 'none'}, so the wheel would lack PyInit_{expected}",
                project.relative(LIB_RS),
            )
        )
    return problems


REGISTRATION_CALL = re.compile(
    r"\.add_function\(\s*wrap_pyfunction!\(\s*(?:[\w:]+::)?(\w+)"
    r"|\.add_class::<\s*(?:[\w:]+::)?(\w+)\s*>"
    r'|\.add\(\s*"([^"]+)"'
)
CFG_FEATURE = re.compile(r'#\[\s*cfg\s*\(\s*feature\s*=\s*"([^"]+)"\s*\)\s*\]')
PYCLASS_RENAME = re.compile(r'#\[pyclass\(\s*name\s*=\s*"(\w+)"[^\]]*\]\s*(?:#\[[^\]]*\]\s*)*pub\s+struct\s+(\w+)')


def python_class_names(sources: list[Path]) -> dict[str, str]:
    """Rust struct name -> the Python name its #[pyclass(name = "...")] gives it."""
    return {
        rust: python for path in sources for python, rust in PYCLASS_RENAME.findall(path.read_text(encoding="utf-8"))
    }


def registered_symbols(backend: str) -> dict[str, str]:
    """Names the Rust sources register for `backend` -> the file registering each.

    Read statically from cloaca-backend/src/python/: a registration call counts
    for every backend unless the line before it is a #[cfg(feature = "...")]
    naming another backend. Classes are named as Python sees them
    (#[pyclass(name = "...")]).
    """
    found = {}
    sources = sorted((project.RUST_SOURCE_DIR / "python").rglob("*.rs"))
    renames = python_class_names(sources)
    for path in sources:
        previous = ""
        for line in path.read_text(encoding="utf-8").splitlines():
            stripped = line.strip()
            for match in REGISTRATION_CALL.finditer(stripped):
                name = next(g for g in match.groups() if g)
                name = renames.get(name, name)
                gate = CFG_FEATURE.search(previous)
                if gate is None or gate.group(1) == backend:
                    found[name] = project.relative(path)
            if stripped and not stripped.startswith("//"):
                previous = stripped
    return found


def check_wheel_locations(backend: str) -> list[Problem]:
    """The backend's wheels lie only where the pipeline builds to and installs from."""
    expected = project.WHEEL_DIR
    built_here = (build.wheel_dir(release=False), build.wheel_dir(release=True))
    problems = []
    for wheel in project.ROOT.rglob(f"{project.extension_module(backend)}-*.whl"):
        parts = wheel.relative_to(project.ROOT).parts
        if parts[0] in (".venvs", ".git") or wheel.parent in built_here:
            continue
        problems.append(
            Problem(
                backend,
                f"a wheel lies at {project.relative(wheel)}, but the pipeline builds into and "
                f"installs from {project.relative(expected)} (maturin --out); it would never be "
                "installed; whatever built it did not use the pipeline's --out",
                f"delete {project.relative(wheel)} and build with `angreal cloaca build --backend "
                f"{backend}` (the folder is WHEEL_DIR in .angreal/cloaca_pipeline/project.py)",
            )
        )
    record = build.stored_build_record(backend)
    if record and not (expected / record.get("wheel", "?")).exists():
        problems.append(
            Problem(
                backend,
                f"the last build recorded {record.get('wheel')} in {project.relative(expected)}, "
                "but it is not there; run `angreal cloaca build --backend " + backend + "`",
                ".angreal/cloaca_pipeline/build.py",
            )
        )
    return problems


# ---------------------------------------------------------------- runtime ---

PROBE = r"""
import importlib, json, os, sys
backend, staging = sys.argv[1], sys.argv[2]
sys.path.insert(0, staging)
os.environ["CLOACA_BACKEND"] = backend
name = "cloaca_" + backend
out = {"errors": {}}
try:
    ext = importlib.import_module(name + "." + name)
    out["extension"] = list(ext.__all__)
except Exception as e:
    out["errors"]["extension"] = f"{type(e).__name__}: {e}"
    print(json.dumps(out)); sys.exit()
for layer, module in (("wrapper", name), ("dispatcher", "cloaca")):
    try:
        m = importlib.import_module(module)
    except Exception as e:
        out["errors"][layer] = f"{type(e).__name__}: {e}"
        continue
    out[layer + "_all"] = list(getattr(m, "__all__", []))
    out[layer + "_missing"] = [n for n in ext.__all__ if getattr(m, n, None) is not getattr(ext, n)]
print(json.dumps(out))
"""


def installed_extension(backend: str) -> Path | None:
    """The extension module file installed in the backend's virtualenv, if any."""
    name = project.extension_module(backend)
    found = sorted(project.venv_dir(backend).glob(f"lib/python*/site-packages/{name}/{name}*.so"))
    return found[0] if found else None


def stage_tree_python(backend: str, rendered: list[render.RenderedFile], staging: Path, extension: Path) -> None:
    """Lay out the tree's wrapper and dispatcher around the installed extension in `staging`."""
    name = project.extension_module(backend)
    package = staging / name
    package.mkdir()
    (package / extension.name).symlink_to(extension)
    shutil.copytree(project.DISPATCHER_PACKAGE_DIR, staging / "cloaca", ignore=shutil.ignore_patterns("__pycache__"))
    by_template = {f.template: f.text for f in rendered}
    (package / "__init__.py").write_text(by_template[render.WRAPPER_TEMPLATE])
    (staging / "cloaca" / "_build_info.py").write_text(by_template[render.BUILD_INFO_TEMPLATE])


def probe_exports(backend: str, rendered: list[render.RenderedFile]) -> dict | None:
    """Import extension, wrapper and dispatcher in the backend's venv; what each exports."""
    extension = installed_extension(backend)
    if extension is None:
        return None
    with tempfile.TemporaryDirectory(prefix="cloaca-check-") as tmp:
        stage_tree_python(backend, rendered, Path(tmp), extension)
        completed = subprocess.run(
            [str(project.venv_python(backend)), "-I", "-c", PROBE, backend, tmp],
            capture_output=True,
            text=True,
            check=False,
        )
    try:
        return json.loads(completed.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"errors": {"probe": completed.stderr.strip()[-500:] or "no output"}}


def check_exports(backend: str, rendered: list[render.RenderedFile], probe: dict) -> list[Problem]:
    """Every name the extension registers reaches the wrapper and the dispatcher, unchanged."""
    fixes = {
        "extension": REGISTRATION,
        "wrapper": WRAPPER_TEMPLATE,
        "dispatcher": DISPATCHER_INIT,
        "probe": ".angreal/cloaca_pipeline/check.py",
    }
    problems = [
        Problem(backend, f"importing the {layer} fails: {error}", fixes[layer])
        for layer, error in probe["errors"].items()
    ]
    if "extension" not in probe:
        return problems
    record = build.stored_build_record(backend)
    wheel = project.WHEEL_DIR / record.get("wheel", "?")
    fresh = (
        record.get("extension") == build.extension_fingerprint(rendered)
        and wheel.exists()
        and venvs.read_record(backend).get("wheel") == venvs.file_digest(wheel)
    )
    if not fresh:
        problems.append(
            Problem(
                backend,
                "the extension installed in "
                f"{project.relative(project.venv_dir(backend))} was not built from the current Rust "
                f"sources, so what it exports may be out of date; run `angreal cloaca test --backend "
                f"{backend}` (or build) and check again",
                f"rebuild: angreal cloaca build --backend {backend} (Rust sources changed since)",
            )
        )
    for layer in ("wrapper", "dispatcher"):
        for name in probe.get(layer + "_missing", []):
            problems.append(
                Problem(
                    backend, f"{name!r} is registered by the Rust extension but missing from the {layer}", fixes[layer]
                )
            )
        exported = probe.get(layer + "_all")
        if exported is not None and sorted(exported) != sorted(probe["extension"]):
            problems.append(
                Problem(
                    backend,
                    f"the {layer}'s __all__ {sorted(exported)} differs from the extension's "
                    f"{sorted(probe['extension'])}; it must be derived from it, not listed by hand",
                    fixes[layer],
                )
            )
    return problems


def check_tests_cover(backend: str, symbols: list[str]) -> list[Problem]:
    """Every exported symbol is named by some test in python-tests/."""
    text = "\n".join(p.read_text(encoding="utf-8") for p in project.PYTHON_TESTS_DIR.glob("test_*.py"))
    return [
        Problem(backend, f"{name!r} is exported but no test in python-tests/ mentions it", "python-tests/test_basic.py")
        for name in symbols
        if not re.search(rf"\b{re.escape(name)}\b", text)
    ]


def check_backend_differences(exports: dict[str, list[str]], source: str) -> list[Problem]:
    """Backends' symbol lists differ only by the names declared backend-only."""
    declared = project.facts().backend_only
    problems = []
    everything = set().union(*exports.values())
    for backend, names in exports.items():
        for name in sorted(everything - set(names)):
            owners = [b for b, n in exports.items() if name in n]
            if not all(name in declared.get(o, ()) for o in owners):
                problems.append(
                    Problem(
                        backend,
                        f"{name!r} is {source} {', '.join(owners)} but not {backend}, "
                        f"and it is not declared backend-only; register it for every backend in "
                        f"{REGISTRATION}, or declare it under [tool.cloaca.backend-only] "
                        f"{', '.join(owners)}",
                        "pyproject.toml",
                    )
                )
    for owner, names in declared.items():
        for name in sorted(names):
            for backend, exported in exports.items():
                if backend != owner and name in exported and name not in declared.get(backend, ()):
                    problems.append(
                        Problem(
                            backend,
                            f"{name!r} is declared {owner}-only but is {source} {backend} "
                            f'too; gate its registration with #[cfg(feature = "{owner}")]',
                            REGISTRATION,
                        )
                    )
    return problems


def check_declared_names_exist(registered: dict[str, list[str]]) -> list[Problem]:
    """Each name declared backend-only is registered by that backend."""
    return [
        Problem(
            owner,
            f"{name!r} is declared {owner}-only in [tool.cloaca.backend-only] but {owner} does not register it",
            "pyproject.toml",
        )
        for owner, names in project.facts().backend_only.items()
        for name in sorted(names)
        if name not in registered.get(owner, [])
    ]


def run_all_checks() -> list[Problem]:
    """Every check, for every backend; the runtime ones where a backend is installed."""
    problems, exports = [], {}
    for backend in project.facts().backends:
        rendered = render.render_backend_templates(backend)
        problems += check_module_names(backend, rendered)
        problems += check_wheel_locations(backend)
        probe = probe_exports(backend, rendered)
        if probe is None:
            print(
                f"cloaca check: {backend}: not installed in "
                f"{project.relative(project.venv_dir(backend))}; runtime checks skipped "
                f"(`angreal cloaca test --backend {backend}` installs it)",
                file=sys.stderr,
            )
            continue
        problems += check_exports(backend, rendered, probe)
        if "extension" in probe:
            exports[backend] = probe["extension"]
            problems += check_tests_cover(backend, probe["extension"])
    registered = {b: sorted(registered_symbols(b)) for b in project.facts().backends}
    problems += check_backend_differences(registered, source="registered in")
    problems += check_declared_names_exist(registered)
    if len(exports) > 1:
        problems += check_backend_differences(exports, source="exported by the installed")
    return problems


def print_report(problems: list[Problem]) -> None:
    """Print each problem with the file to fix, or a one-line all-clear."""
    if not problems:
        print("cloaca check: the chain is intact (names, wheels, exports, tests).")
        return
    for p in problems:
        print(str(p))
