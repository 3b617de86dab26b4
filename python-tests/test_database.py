"""The database the harness provides for this backend is real and usable."""

import socket
import struct
from urllib.parse import urlsplit

from conftest import query_database


def write_and_read_sqlite(url: str) -> None:
    # query_database reads and writes from a process of its own (see there why).
    query_database(url, "create table if not exists harness_probe (v text)", must_exist=False)
    query_database(url, "insert into harness_probe values ('written')")
    assert query_database(url, "select v from harness_probe")[-1] == ("written",)


def postgres_answers(url: str) -> None:
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port or 5432), timeout=5) as sock:
        sock.sendall(struct.pack("!ii", 8, 80877103))  # SSLRequest
        assert sock.recv(1) in (b"S", b"N")


def test_the_harness_database_is_real(backend, database_url):
    {"sqlite": write_and_read_sqlite, "postgres": postgres_answers}[backend](database_url)
