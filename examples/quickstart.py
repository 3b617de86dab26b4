"""cloaca quickstart: the smallest program that goes through `import cloaca`.

Run it with `angreal cloaca demo` (builds the sqlite backend and runs this in
its virtualenv). For now the backends only carry the pipeline's smoke symbols;
this becomes a real workflow when the engine lands.
"""

import cloaca


def main() -> None:
    print(f"cloaca {cloaca.__version__}, backend: {cloaca.get_backend()}")
    print(cloaca.hello_world())
    greeter = cloaca.HelloClass()
    print(f"{greeter!r} says {greeter.get_message()!r}")


if __name__ == "__main__":
    main()
