"""cloaca: durable DAG workflows with a Rust core and a Python API.

This package is a dispatcher. It imports the installed backend
(``cloaca_sqlite`` or ``cloaca_postgres``; see :mod:`cloaca._loader` for the
order and the ``CLOACA_BACKEND`` override) and re-exports exactly the names in
that backend's ``__all__``, so a symbol exists here if and only if the backend
registered it. ``cloaca.get_backend()`` says which backend was chosen.
"""

from cloaca._loader import load_backend as _load_backend

_backend = _load_backend()

globals().update({name: getattr(_backend, name) for name in _backend.__all__})

__all__ = list(_backend.__all__)

del _backend, _load_backend
