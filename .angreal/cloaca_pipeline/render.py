"""`generate`: render templates/ for one backend into the tree.

Each template has exactly one destination (TEMPLATE_DESTINATIONS). Every file
written carries a header naming its template; the list of written files is kept
in the manifest so that `scrub` removes exactly those and nothing else.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import jinja2

from cloaca_pipeline import project
from cloaca_pipeline.errors import PipelineError

#: The templates other steps read by name (relative to templates/).
CARGO_TEMPLATE = "backend_cargo.toml.j2"
PYPROJECT_TEMPLATE = "backend_pyproject.toml.j2"
WRAPPER_TEMPLATE = "python/cloaca_{{backend}}/__init__.py.j2"
BUILD_INFO_TEMPLATE = "dispatcher_build_info.py.j2"
#: The typed surface of `import cloaca`, written once: the backend package's stub
#: renders it with that backend's names, the dispatcher's stub includes it and
#: renders it with every backend's names (the dispatcher may stand for any).
STUB_TEMPLATE = "python/cloaca_{{backend}}/__init__.pyi.j2"
DISPATCHER_STUB_TEMPLATE = "dispatcher_init.pyi.j2"
#: PEP 561 markers: the wheels carry their types.
PY_TYPED_TEMPLATE = "python/cloaca_{{backend}}/py.typed.j2"
DISPATCHER_PY_TYPED_TEMPLATE = "dispatcher_py.typed.j2"

#: template (relative to templates/) -> destination (relative to the root).
#: "{backend}" in a destination is replaced by the backend's name.
TEMPLATE_DESTINATIONS = {
    CARGO_TEMPLATE: "cloaca-backend/Cargo.toml",
    PYPROJECT_TEMPLATE: "cloaca-backend/pyproject.toml",
    WRAPPER_TEMPLATE: "cloaca-backend/python/cloaca_{backend}/__init__.py",
    "dispatcher_pyproject.toml.j2": "cloaca/pyproject.toml",
    BUILD_INFO_TEMPLATE: "cloaca/src/cloaca/_build_info.py",
    STUB_TEMPLATE: "cloaca-backend/python/cloaca_{backend}/__init__.pyi",
    PY_TYPED_TEMPLATE: "cloaca-backend/python/cloaca_{backend}/py.typed",
    DISPATCHER_STUB_TEMPLATE: "cloaca/src/cloaca/__init__.pyi",
    DISPATCHER_PY_TYPED_TEMPLATE: "cloaca/src/cloaca/py.typed",
}

HEADER_MARK = "generated from templates/"


@dataclass(frozen=True)
class RenderedFile:
    """One file `generate` produces: where it goes and what it holds."""

    template: str
    destination: Path
    text: str


def header_for(template: str):
    """A jinja2 global: the do-not-edit header in the comment syntax given."""

    def header(comment: str) -> str:
        return (
            f"{comment} {HEADER_MARK}{template} by `angreal cloaca generate` — do not edit.\n"
            f"{comment} Change the template (or [tool.cloaca] in pyproject.toml) and regenerate."
        )

    return header


def has_generated_header(text: str) -> bool:
    """True when `text` starts with the header generate writes."""
    return any(HEADER_MARK in line for line in text.splitlines()[:2])


def exported_by(backend_only: dict[str, frozenset[str]]):
    """A jinja2 global: whether the file being rendered carries the public name `name`.

    A name of [tool.cloaca.backend-only] is carried only by the surfaces of the
    backends that export it; every other name by all. The surface is the
    backend rendered for, or the `surface` list a template sets (the dispatcher's
    stub sets every backend).
    """

    @jinja2.pass_context
    def exported(context, name: str) -> bool:
        surface = context.get("surface") or [context["backend"]]
        owners = [b for b, names in backend_only.items() if name in names]
        return not owners or any(b in surface for b in owners)

    return exported


def render_backend_templates(backend: str) -> list[RenderedFile]:
    """Render every template for `backend`, in memory."""
    facts = project.facts()
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(project.TEMPLATES_DIR)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    context = {
        "backend": backend,
        "backends": facts.backends,
        "version": facts.version,
        "python_floor": facts.python_floor,
        "stub_template": STUB_TEMPLATE,
        "exported": exported_by(facts.backend_only),
    }
    unmapped = sorted(set(list_templates()) - set(TEMPLATE_DESTINATIONS))
    if unmapped:
        raise PipelineError(
            f"templates/{unmapped[0]} has no destination: add it to TEMPLATE_DESTINATIONS "
            "in .angreal/cloaca_pipeline/render.py so generate knows where it goes."
        )
    rendered = []
    for template, destination in TEMPLATE_DESTINATIONS.items():
        try:
            tmpl = env.get_template(template)
            text = tmpl.render(context, header=header_for(template))
        except jinja2.TemplateError as exc:
            raise PipelineError(
                f"templates/{template} does not render: {exc}. Fix the template; "
                f"it may use only {', '.join(sorted(context))} and header()."
            ) from exc
        path = project.ROOT / destination.format(backend=backend)
        rendered.append(RenderedFile(template, path, text))
    return rendered


def list_templates() -> list[str]:
    """Every template file under templates/, as paths relative to it."""
    return sorted(p.relative_to(project.TEMPLATES_DIR).as_posix() for p in project.TEMPLATES_DIR.rglob("*.j2"))


def write_rendered_files(files: list[RenderedFile]) -> list[Path]:
    """Write rendered files whose content changed; record all of them in the manifest.

    Unchanged files are not rewritten, so their mtimes stay and cargo does not
    rebuild. A file at a destination that lacks our header is someone else's:
    refuse rather than overwrite it.
    """
    manifest = load_manifest()
    for f in files:
        if f.destination.exists():
            current = f.destination.read_text(encoding="utf-8", errors="replace")
            if not has_generated_header(current):
                raise PipelineError(
                    f"{project.relative(f.destination)} exists and was not written by "
                    "`angreal cloaca generate` (it lacks the generated-file header). "
                    "Move it away or delete it yourself, then run generate again; "
                    "the pipeline never overwrites a file it did not create."
                )
            if current == f.text:
                manifest["files"][project.relative(f.destination)] = digest(f.text)
                continue
        created = [p for p in reversed(f.destination.parents) if not p.exists()]
        f.destination.parent.mkdir(parents=True, exist_ok=True)
        for d in created:
            manifest["directories"][project.relative(d)] = True
        f.destination.write_text(f.text, encoding="utf-8")
        manifest["files"][project.relative(f.destination)] = digest(f.text)
    save_manifest(manifest)
    return [f.destination for f in files]


def digest(text: str) -> str:
    """sha256 of a text, hex."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def load_manifest() -> dict:
    """What generate has written so far: {"files": {path: sha}, "directories": {path: True}}."""
    try:
        data = json.loads(project.GENERATED_MANIFEST.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    return {"files": dict(data.get("files", {})), "directories": dict(data.get("directories", {}))}


def save_manifest(manifest: dict) -> None:
    """Persist the manifest next to the pyproject (git-ignored)."""
    project.GENERATED_MANIFEST.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def generate(backend: str) -> list[Path]:
    """Render and write every template for `backend`; returns the paths written."""
    return write_rendered_files(render_backend_templates(backend))
