"""The database the harness provides for this backend is real and usable."""

import socket
import sqlite3
import struct
from urllib.parse import urlsplit

import pytest


def test_sqlite_database_file_is_writable(backend, database_url):
    if backend != "sqlite":
        pytest.skip("sqlite database only")
    path = database_url.removeprefix("sqlite:///")
    with sqlite3.connect("/" + path.lstrip("/")) as db:
        db.execute("create table if not exists harness_probe (v text)")
        db.execute("insert into harness_probe values ('written')")
    with sqlite3.connect("/" + path.lstrip("/")) as db:
        assert db.execute("select v from harness_probe").fetchall()[-1] == ("written",)


def test_postgres_server_answers_the_protocol(backend, database_url):
    if backend != "postgres":
        pytest.skip("postgres database only")
    parts = urlsplit(database_url)
    with socket.create_connection((parts.hostname, parts.port or 5432), timeout=5) as sock:
        sock.sendall(struct.pack("!ii", 8, 80877103))  # SSLRequest
        assert sock.recv(1) in (b"S", b"N")
