"""`check`: verify the chain Rust -> extension -> wrapper -> dispatcher -> tests.

Static checks read the tree: the names Cargo.toml, pyproject.toml and the
`#[pymodule]` functions give each backend's module, and where wheels lie.
Runtime checks import, in the backend's virtualenv, the *installed* extension
module together with the wrapper and the dispatcher *as they are in the tree
now* (rendered in memory), and compare what each exports. Nothing is built or
written in the tree, so check can run on any copy of it. Every problem names
the file to fix.

The typed surface is checked the same way: stubtest compares the stubs rendered
from the tree with the installed extension in each backend's virtualenv,
`mypy --strict` checks examples/ against the dispatcher's stub, and
docs/api.md must give every name of the stub its signature (and the runner
settings table what `DefaultRunnerConfig.settings()` says).
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

from cloaca_pipeline import build, dist, project, render, venvs

LIB_RS = project.RUST_SOURCE_DIR / "lib.rs"
# The files a problem names, as paths from the root.
CARGO_TEMPLATE = f"templates/{render.CARGO_TEMPLATE}"
PYPROJECT_TEMPLATE = f"templates/{render.PYPROJECT_TEMPLATE}"
WRAPPER_TEMPLATE = f"templates/{render.WRAPPER_TEMPLATE}"
DISPATCHER_INIT = project.relative(project.DISPATCHER_PACKAGE_DIR / "__init__.py")
REGISTRATION = project.relative(project.RUST_SOURCE_DIR / "python" / "mod.rs")
STUB_TEMPLATE = f"templates/{render.STUB_TEMPLATE}"
API_DOC = project.ROOT / "docs" / "api.md"


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
    # `dist` copies release wheels into the wheelhouse: they belong there too.
    built_here = (build.wheel_dir(release=False), build.wheel_dir(release=True), dist.DIST_DIR)
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
config = getattr(ext, "DefaultRunnerConfig", None)
try:
    if hasattr(config, "settings"):
        out["settings"] = list(config.settings())
    elif config is not None:
        out["settings"] = [{"name": k, "default": v} for k, v in config().to_dict().items()]
except Exception as e:
    out["settings_error"] = f"{type(e).__name__}: {e}"
print(json.dumps(out, default=repr))
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
    stage_stubs(rendered, staging, backend)


def stage_stubs(rendered: list[render.RenderedFile], staging: Path, backend: str | None = None) -> None:
    """Put the stubs and py.typed markers rendered from the tree into `staging`.

    The dispatcher's always; the backend package's too when `backend` is given.
    """
    by_template = {f.template: f.text for f in rendered}
    targets = {
        render.DISPATCHER_STUB_TEMPLATE: staging / "cloaca" / "__init__.pyi",
        render.DISPATCHER_PY_TYPED_TEMPLATE: staging / "cloaca" / "py.typed",
    }
    if backend is not None:
        package = staging / project.extension_module(backend)
        targets[render.STUB_TEMPLATE] = package / "__init__.pyi"
        targets[render.PY_TYPED_TEMPLATE] = package / "py.typed"
    for template, path in targets.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(by_template[template])


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


# ---------------------------------------------------------- typed surface ---

#: The compiled module inside each backend package: Python reaches it only
#: through the package, whose stub describes everything it exports.
EXTENSION_ALLOWLIST = r"{name}\.{name}"

STUBTEST_RUNNER = r"""
import sys
sys.path.insert(0, sys.argv[1])
try:
    from mypy.stubtest import main
except ImportError as e:
    print(f"cloaca-check: no stubtest: {e}")
    sys.exit(97)
sys.argv = ["stubtest", *sys.argv[2:]]
sys.exit(main())
"""


def stubtest_allowlist(backend: str) -> list[str]:
    """What stubtest may not find at runtime for `backend`, and why each may be missing.

    The dispatcher's stub carries every backend's names; on this backend the
    names only other backends export are absent, and so __all__ differs.
    """
    declared = project.facts().backend_only
    others = sorted({n for b, names in declared.items() if b != backend for n in names} - declared[backend])
    entries = [EXTENSION_ALLOWLIST.format(name=project.extension_module(backend))]
    entries += [rf"cloaca\.{re.escape(name)}(\..*)?" for name in others]
    if others:
        entries.append(r"cloaca\.__all__")
    return entries


def parse_stubtest(output: str, staging: Path, backend: str) -> list[tuple[str, str]]:
    """stubtest's report as (message, where) pairs; `where` is the rendered stub file and line."""
    rendered_at = {
        str(staging / project.extension_module(backend) / "__init__.pyi"): project.relative(
            project.ROOT / render.TEMPLATE_DESTINATIONS[render.STUB_TEMPLATE].format(backend=backend)
        ),
        str(staging / "cloaca" / "__init__.pyi"): project.relative(
            project.ROOT / render.TEMPLATE_DESTINATIONS[render.DISPATCHER_STUB_TEMPLATE]
        ),
    }
    found = []
    for block in re.split(r"\n(?=error: )", output.strip()):
        lines = block.strip().splitlines()
        if not lines or not lines[0].startswith("error: "):
            continue
        message = lines[0][len("error: ") :]
        if message.startswith("not checking stubs due to mypy build errors"):
            # The stub does not even type-check: mypy's own errors follow, one a line.
            message += " " + "; ".join(line.strip() for line in lines[1:])
        where = ""
        for line in lines[1:]:
            located = re.match(r"Stub: in file (.+?):(\d+)$", line)
            if located:
                where = f"{rendered_at.get(located.group(1), located.group(1))}:{located.group(2)}"
        message += "".join(f"; {line.strip()}" for line in lines if line.startswith("Names exported in the stub"))
        runtime = lines[lines.index("Runtime:") + 1].strip() if "Runtime:" in lines[:-1] else ""
        if runtime and runtime != "MISSING":
            message += f" (runtime: {runtime})"
        found.append((message, where))
    return found


def check_stubs(backend: str, rendered: list[render.RenderedFile]) -> list[Problem]:
    """stubtest: the stubs rendered from the tree describe the installed extension, wrapper and dispatcher."""
    extension = installed_extension(backend)
    if extension is None:
        return []
    with tempfile.TemporaryDirectory(prefix="cloaca-stubtest-") as tmp:
        staging = Path(tmp) / "staging"
        staging.mkdir()
        stage_tree_python(backend, rendered, staging, extension)
        allowlist = Path(tmp) / "allowlist.txt"
        allowlist.write_text("\n".join(stubtest_allowlist(backend)) + "\n")
        env = {**os.environ, "CLOACA_BACKEND": backend, "MYPYPATH": str(staging)}
        completed = subprocess.run(
            [
                str(project.venv_python(backend)),
                "-I",
                "-c",
                STUBTEST_RUNNER,
                str(staging),
                project.extension_module(backend),
                "cloaca",
                "--allowlist",
                str(allowlist),
            ],
            capture_output=True,
            text=True,
            check=False,
            cwd=tmp,
            env=env,
        )
        output = completed.stdout + completed.stderr
        if completed.returncode == 97:
            return [
                Problem(
                    backend,
                    f"stubtest (mypy) is not installed in {project.relative(project.venv_dir(backend))}, so the "
                    "stubs cannot be checked against the installed extension",
                    f"run `angreal cloaca test --backend {backend} -k test_basic` (it installs the check tools)",
                )
            ]
        found = parse_stubtest(output, staging, backend)
    if completed.returncode != 0 and not found:
        return [Problem(backend, f"stubtest failed without a report: {output.strip()[-500:]}", STUB_TEMPLATE)]
    return [
        Problem(backend, f"stubtest: {message}" + (f"; stub: {where}" if where else ""), STUB_TEMPLATE)
        for message, where in found
    ]


def check_examples(rendered: list[render.RenderedFile]) -> list[Problem]:
    """`mypy --strict` on examples/, against the dispatcher's stub as the tree renders it."""
    examples = sorted(project.EXAMPLES_DIR.glob("*.py"))
    if not examples:
        return []
    with tempfile.TemporaryDirectory(prefix="cloaca-mypy-") as tmp:
        stage_stubs(rendered, Path(tmp))
        completed = subprocess.run(
            [
                str(project.PYTHON),
                "-m",
                "mypy",
                "--strict",
                "--no-incremental",
                "--cache-dir",
                os.devnull,
                "--config-file",
                os.devnull,
                *[project.relative(p) for p in examples],
            ],
            capture_output=True,
            text=True,
            check=False,
            cwd=project.ROOT,
            env={**os.environ, "MYPYPATH": tmp},
        )
    if completed.returncode == 0:
        return []
    errors = [line for line in completed.stdout.splitlines() if re.match(r"\S+\.py:\d+: error: ", line)]
    if not errors:
        return [
            Problem(
                "examples",
                f"mypy --strict did not run: {(completed.stdout + completed.stderr).strip()[-500:]}",
                "pip install . (mypy is a development tool of pyproject.toml)",
            )
        ]
    return [Problem("examples", f"mypy --strict: {line}", line.split(":", 1)[0]) for line in errors]


# The signatures docs/api.md must show, read from the dispatcher's stub (every backend's names).


def normalise(text: str) -> str:
    """A signature with layout left out: wrapped lines, quotes, spaces around = and trailing commas do not count."""
    text = re.sub(r"\s+", " ", text.replace('"', "'")).strip()
    text = re.sub(r" ?= ?", "=", text)
    text = re.sub(r"([(\[]) ", r"\1", text)
    text = re.sub(r",? ([)\]])", r"\1", text)
    return text


def parameters(function: ast.FunctionDef) -> str:
    """A function's parameters as written in the stub, without self or cls."""
    args = function.args
    positional = args.posonlyargs + args.args
    if positional and positional[0].arg in ("self", "cls"):
        args = ast.arguments(
            posonlyargs=args.posonlyargs[1:] if args.posonlyargs else [],
            args=args.args[1:] if not args.posonlyargs else args.args,
            vararg=args.vararg,
            kwonlyargs=args.kwonlyargs,
            kw_defaults=args.kw_defaults,
            kwarg=args.kwarg,
            defaults=args.defaults,
        )
    return ast.unparse(args)


def decorators(function: ast.FunctionDef) -> set[str]:
    """The names of a function's decorators."""
    return {ast.unparse(d) for d in function.decorator_list}


def function_signature(qualified: str, function: ast.FunctionDef) -> str:
    """`name(params) -> ret`, `@staticmethod` first for a static method; `name: T` for a property."""
    returns = ast.unparse(function.returns) if function.returns else "None"
    if "property" in decorators(function):
        return f"{qualified}: {returns}"
    prefix = "@staticmethod " if "staticmethod" in decorators(function) else ""
    return f"{prefix}{qualified}({parameters(function)}) -> {returns}"


def class_signature(node: ast.ClassDef) -> list[str]:
    """A class's entry: its constructor call (or `class Name(bases)`), then its declared fields."""
    constructor = next((n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__new__"), None)
    if constructor is not None:
        lines = [f"{node.name}({parameters(constructor)})"]
    elif node.bases:
        lines = [f"class {node.name}({', '.join(ast.unparse(b) for b in node.bases)})"]
    else:
        lines = [f"class {node.name}"]
    lines += [ast.unparse(n) for n in node.body if isinstance(n, ast.AnnAssign)]
    return lines


def stub_entries(stub: str) -> dict[str, list[str]]:
    """Every entry docs/api.md must have: qualified name -> the signature lines it must show.

    Top-level names (public and the private types their signatures use) and every
    method and property of every class; overloads share one entry.
    """
    entries: dict[str, list[str]] = {}

    def add_function(qualified: str, function: ast.FunctionDef) -> None:
        entries.setdefault(qualified, []).append(function_signature(qualified, function))

    for node in ast.parse(stub).body:
        if isinstance(node, ast.FunctionDef):
            add_function(node.name, node)
        elif isinstance(node, ast.ClassDef):
            entries[node.name] = class_signature(node)
            for member in node.body:
                if isinstance(member, ast.FunctionDef) and member.name != "__new__":
                    add_function(f"{node.name}.{member.name}", member)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            entries[node.target.id] = [ast.unparse(node)]
        elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name != "__all__":
                entries[name] = [ast.unparse(node)]
    return entries


DOC_HEADING = re.compile(r"^#{2,4} `([\w.]+)`(.*)$", re.MULTILINE)
DOC_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def documented_entries(text: str) -> dict[str, tuple[str, str]]:
    """docs/api.md's entries: name -> (the rest of its heading, its first python block)."""
    headings = list(DOC_HEADING.finditer(text))
    found = {}
    for i, heading in enumerate(headings):
        end = headings[i + 1].start() if i + 1 < len(headings) else len(text)
        # A section ends at the next heading of any level.
        following = re.search(r"^#", text[heading.end() : end], re.MULTILINE)
        body = text[heading.end() : heading.end() + following.start()] if following else text[heading.end() : end]
        block = DOC_BLOCK.search(body)
        found[heading.group(1)] = (heading.group(2), block.group(1) if block else "")
    return found


def check_api_doc(rendered: list[render.RenderedFile]) -> list[Problem]:
    """docs/api.md shows every name of the stub with the stub's signature, and nothing the stub lacks."""
    doc = project.relative(API_DOC)
    if not API_DOC.exists():
        return [Problem("docs", f"{doc} is missing; it documents every name of the stub", doc)]
    stub = next(f.text for f in rendered if f.template == render.DISPATCHER_STUB_TEMPLATE)
    expected = stub_entries(stub)
    documented = documented_entries(API_DOC.read_text(encoding="utf-8"))
    owners = {n: b for b, names in project.facts().backend_only.items() for n in names}
    problems = []
    for name, lines in expected.items():
        shown = "\n".join(lines)
        if name not in documented:
            problems.append(
                Problem("docs", f"{doc} has no entry `{name}`; give it a heading and the signature\n{shown}", doc)
            )
            continue
        heading, block = documented[name]
        if normalise(block) != normalise(" ".join(lines)):
            problems.append(
                Problem(
                    "docs",
                    f"{doc} shows `{name}` as\n{block.rstrip()}\nbut the stub ({STUB_TEMPLATE}) says\n{shown}",
                    doc,
                )
            )
        if name in owners and f"({owners[name]} only)" not in heading:
            problems.append(Problem("docs", f"{doc}: the heading of `{name}` must say ({owners[name]} only)", doc))
    for name in sorted(set(documented) - set(expected)):
        problems.append(Problem("docs", f"{doc} documents `{name}`, which the stub does not define", doc))
    return problems


SETTINGS_TABLE = re.compile(r"<!-- settings:begin -->\n(.*?)<!-- settings:end -->", re.DOTALL)
SETTINGS_COLUMNS = ("name", "type", "default", "accepted", "doc")


def settings_rows(settings: list[dict]) -> list[str]:
    """The settings table docs/api.md must hold, one markdown row per setting."""

    def cell(setting: dict, column: str) -> str:
        value = setting.get(column, "")
        if column == "name":
            return f"`{value}`"
        if column == "default":
            # A setting whose default differs by backend shows each backend's.
            by_backend = setting.get("defaults") or {}
            if len({repr(v) for v in by_backend.values()}) > 1:
                return ", ".join(f"`{v!r}` on {b}" for b, v in by_backend.items())
            return f"`{value!r}`"
        return str(value).replace("|", "\\|")

    header = ["| " + " | ".join(SETTINGS_COLUMNS) + " |", "|" + "---|" * len(SETTINGS_COLUMNS)]
    return header + ["| " + " | ".join(cell(s, c) for c in SETTINGS_COLUMNS) + " |" for s in settings]


def check_settings_table(backend: str, probe: dict) -> list[Problem]:
    """docs/api.md's runner settings table is what DefaultRunnerConfig.settings() says.

    Until the extension has settings(), the names, order and defaults are
    checked against DefaultRunnerConfig().to_dict().
    """
    doc = project.relative(API_DOC)
    if "settings_error" in probe:
        return [Problem(backend, f"DefaultRunnerConfig.settings() fails: {probe['settings_error']}", REGISTRATION)]
    settings = probe.get("settings")
    if settings is None or not API_DOC.exists():
        return []
    table = SETTINGS_TABLE.search(API_DOC.read_text(encoding="utf-8"))
    if table is None:
        return [Problem(backend, f"{doc} lacks the settings table between <!-- settings:begin/end --> markers", doc)]
    rows = [r.strip() for r in table.group(1).strip().splitlines()]
    wanted = settings_rows(settings)
    complete = all(set(SETTINGS_COLUMNS) <= set(s) for s in settings)

    def comparable(row: str) -> list[str]:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", row.strip())[1:-1]]
        return cells if complete else [c for c, col in zip(cells, SETTINGS_COLUMNS) if col in ("name", "default")]

    if [comparable(r) for r in rows] == [comparable(r) for r in wanted]:
        return []
    if complete:
        must = "between the markers it must read\n" + "\n".join(wanted)
        source = "DefaultRunnerConfig.settings()"
    else:
        must = "its name and default columns must read, in this order: " + ", ".join(
            f"`{s['name']}` `{s['default']!r}`" for s in settings
        )
        source = "DefaultRunnerConfig().to_dict()"
    return [Problem(backend, f"the settings table of {doc} differs from {source}; {must}", doc)]


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
            problems += check_stubs(backend, rendered)
            problems += check_settings_table(backend, probe)
    # The dispatcher's files are the same for every backend: any rendering serves.
    rendered = render.render_backend_templates(project.facts().backends[0])
    problems += check_api_doc(rendered)
    problems += check_examples(rendered)
    registered = {b: sorted(registered_symbols(b)) for b in project.facts().backends}
    problems += check_backend_differences(registered, source="registered in")
    problems += check_declared_names_exist(registered)
    if len(exports) > 1:
        problems += check_backend_differences(exports, source="exported by the installed")
    return problems


def print_report(problems: list[Problem]) -> None:
    """Print each problem with the file to fix, or a one-line all-clear."""
    if not problems:
        print("cloaca check: the chain is intact (names, wheels, exports, tests, stubs, docs/api.md, examples).")
        return
    for p in problems:
        print(str(p))
