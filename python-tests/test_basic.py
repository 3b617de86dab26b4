"""The module-level API of `import cloaca`, on whichever backend this suite runs against."""

import importlib

import pytest

import cloaca


class TestBackendFunctionality:
    """The module-level functions, classes and constants, reached through the dispatcher."""

    def test_hello_world(self):
        assert cloaca.hello_world() == "Hello from Cloaca backend!"

    def test_HelloClass_message_and_repr(self):
        greeter = cloaca.HelloClass()
        assert greeter.get_message() == "Hello from HelloClass!"
        assert repr(greeter) == "HelloClass(message='Hello from HelloClass!')"

    def test_HelloClass_instances_are_independent(self):
        assert cloaca.HelloClass() is not cloaca.HelloClass()
        assert isinstance(cloaca.HelloClass(), cloaca.HelloClass)

    def test_get_backend_names_the_backend_under_test(self, backend):
        assert cloaca.get_backend() == backend

    def test___backend___is_the_same_constant(self, backend):
        assert cloaca.__backend__ == backend
        assert isinstance(cloaca.__backend__, str)

    def test___version___matches_backend_and_dispatcher(self, backend):
        from cloaca._build_info import VERSION

        backend_module = importlib.import_module(f"cloaca_{backend}")
        assert cloaca.__version__ == backend_module.__version__ == VERSION
        assert all(part.isdigit() for part in VERSION.split(".")[:2])

    def test_symbols_come_from_the_backend_unchanged(self, backend):
        backend_module = importlib.import_module(f"cloaca_{backend}")
        for name in backend_module.__all__:
            assert getattr(cloaca, name) is getattr(backend_module, name), name


class TestExports:
    """The dispatcher exports exactly what the chosen backend exports."""

    def test_all_equals_backend_all(self, backend):
        backend_module = importlib.import_module(f"cloaca_{backend}")
        assert cloaca.__all__ == backend_module.__all__

    def test_wrapper_all_equals_extension_all(self, backend):
        extension = importlib.import_module(f"cloaca_{backend}.cloaca_{backend}")
        wrapper = importlib.import_module(f"cloaca_{backend}")
        assert wrapper.__all__ == list(extension.__all__)

    def test_contract_symbols_present(self):
        for name in ("hello_world", "HelloClass", "get_backend", "__backend__", "__version__"):
            assert name in cloaca.__all__, name

    def test_star_import_gives_every_exported_name(self):
        namespace = {}
        exec("from cloaca import *", namespace)
        assert set(cloaca.__all__) <= set(namespace)

    def test_backend_only_names_absent_on_other_backends(self, backend, other_backends):
        """Names declared only for another backend must not exist here."""
        import tomllib
        from pathlib import Path

        facts = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
        declared = facts["tool"]["cloaca"].get("backend-only", {})
        mine = set(declared.get(backend, []))
        for other in other_backends:
            for name in set(declared.get(other, [])) - mine:
                assert not hasattr(cloaca, name), f"{name} is {other}-only but present on {backend}"
                assert name not in cloaca.__all__

    def test_other_backends_are_not_installed_here(self, other_backends):
        for other in other_backends:
            with pytest.raises(ModuleNotFoundError):
                importlib.import_module(f"cloaca_{other}")
