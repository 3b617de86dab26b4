"""Choose and import the backend that `import cloaca` stands for.

The backends are tried in the order of ``_build_info.BACKENDS`` unless the
environment variable ``CLOACA_BACKEND`` names one. A backend that is not
installed is noted and the next one tried; a backend that is installed but
fails to import, or whose version differs from this package's, stops the
search with that error: quietly switching to another database would be worse.
When nothing is installed, one ImportError lists every attempt and the
commands that fix it.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

from cloaca._build_info import BACKENDS, VERSION

#: Environment variable that forces a backend ("sqlite" or "postgres").
BACKEND_ENV_VAR = "CLOACA_BACKEND"


class BackendSelectionError(ImportError, ValueError):
    """CLOACA_BACKEND holds a value that is not a cloaca backend.

    An ImportError (``import cloaca`` fails) that is also a ValueError (the
    cause is a bad value, not a missing package).
    """


def backend_module_name(backend: str) -> str:
    """The importable name of a backend package."""
    return f"cloaca_{backend}"


def install_hint(backends=BACKENDS) -> str:
    """The pip commands that install each backend with this version of cloaca."""
    return "\n".join(f"    pip install 'cloaca[{b}]=={VERSION}'" for b in backends)


def requested_backends() -> tuple[str, ...]:
    """The backends to try: the one CLOACA_BACKEND forces, else all in order."""
    forced = os.environ.get(BACKEND_ENV_VAR, "").strip()
    if not forced:
        return BACKENDS
    if forced not in BACKENDS:
        raise BackendSelectionError(
            f"{BACKEND_ENV_VAR}={forced!r} is not a cloaca backend. Set it to one of "
            f"{', '.join(BACKENDS)}, or unset it to use the first installed backend "
            f"(tried in the order {', '.join(BACKENDS)})."
        )
    return (forced,)


def import_backend(backend: str) -> ModuleType | None:
    """Import one backend; None if it is not installed, an error if it is broken."""
    name = backend_module_name(backend)
    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        if isinstance(exc, ModuleNotFoundError) and exc.name == name:
            return None
        raise ImportError(
            f"The {backend} backend ({name}) is installed but cannot be imported: {exc}. "
            f"Reinstall it:\n{install_hint((backend,))}"
        ) from exc
    found = getattr(module, "__version__", None)
    if found != VERSION:
        raise ImportError(
            f"cloaca {VERSION} found {name} {found}: the dispatcher and its backend must "
            f"be the same version. Install matching ones:\n{install_hint((backend,))}"
        )
    return module


def load_backend() -> ModuleType:
    """Return the backend module `import cloaca` re-exports."""
    candidates = requested_backends()
    attempts = []
    for backend in candidates:
        module = import_backend(backend)
        if module is not None:
            return module
        attempts.append(f"{backend_module_name(backend)} (not installed)")
    if len(candidates) == 1:
        raise ImportError(
            f"{BACKEND_ENV_VAR}={candidates[0]} asks for the {candidates[0]} backend, but "
            f"{backend_module_name(candidates[0])} is not installed. Install it, or unset "
            f"{BACKEND_ENV_VAR} to use whichever backend is installed:\n"
            f"{install_hint(candidates)}",
            name=backend_module_name(candidates[0]),
        )
    raise ImportError(
        "No cloaca backend is installed. Tried, in order: " + ", ".join(attempts) + ".\n"
        "Install one of them (sqlite runs embedded with no server; postgres lets many "
        "runners on many machines share one database):\n" + install_hint()
    )
