"""Multi-tenancy: one PostgreSQL schema per tenant, tenant roles made by DatabaseAdmin.

postgres: `DefaultRunner.with_schema` keeps all state in one schema, so runners
on different schemas of one database never see each other's executions or cron
schedules; schema names are checked before any connection is made. DatabaseAdmin
creates a LOGIN role that owns its schema and nothing else, stores its password
only as a SCRAM-SHA-256 verifier (checked here against pg_authid, since the test
cluster trusts every connection whatever its password), and removes only the
tenants it created. The tenant's limits are checked as the tenant, with psql.
sqlite: with_schema refuses, and the tenant classes do not exist.

Roles are cluster-wide (databases are not), so every role a test may create is
named uniquely and dropped when the test ends, whatever happened.
"""

import base64
import hashlib
import hmac
import os
import re
import socket
import stringprep
import subprocess
import unicodedata
import uuid
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import pytest

import cloaca
from conftest import CLUSTER_ROLES, psql, psql_path, query_database, sqlite_path_of

pytestmark = CLUSTER_ROLES

TENANT_CLASSES = ("DatabaseAdmin", "TenantConfig", "TenantCredentials")
REQUIRED_TABLES = {"cloaca_schema_migrations", "cloaca_executions", "cloaca_task_executions"}

#: Names refused as schema names and tenant user names, with readable test ids.
BAD_NAMES = {
    "empty": "",
    "uppercase": "Tenant",
    "hyphen": "tenant-name",
    "leading-digit": "1abc",
    "space": "a b",
    "statement": "x;DROP SCHEMA public CASCADE",
    "quote-escape": '"; DROP SCHEMA public CASCADE; --',
    "non-ascii": "ünïcode",
    "64-chars": "a" * 64,
    "pg-prefix": "pg_x",
    "pg-catalog": "pg_catalog",
    "information-schema": "information_schema",
    "trailing-newline": "tenant\n",
    "nul": "ten\0ant",
}

#: Names that follow the rule: [a-z_][a-z0-9_]{0,62}, no pg_ prefix.
GOOD_NAMES = ["a", "_", "tenant_a", "t0_x9", "pg", "a" * 63]

#: Passwords a caller may give; each must be stored exactly and survive the URL.
GIVEN_PASSWORDS = {
    "quotes": 'it\'s a "quoted" password',
    "backslashes": "back\\slash\\\\ and \\' too",
    "semicolons": "semi;colon;DROP TABLE x;",
    "statement": "'; DROP ROLE postgres; --",
    "dollar-quotes": "$$; DROP ROLE postgres; $$",
    "unicode": "ünïcode pässwörd ✓",
    "url-special": "user:pw@host/db?x=1#frag%25&a+b ",
    "looks-like-scram": "SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy",
    "looks-like-md5": "md5" + "0123456789abcdef" * 2,
    "200-chars": ("Ab9'\";\\%@/ ü" * 20)[:200],
}


@pytest.fixture
def postgres_only(backend):
    if backend != "postgres":
        pytest.skip(
            "multi-tenancy is a postgres feature (schemas and roles); the sqlite "
            "backend refuses it, which TestSqlite checks"
        )


@pytest.fixture
def sqlite_only(backend):
    if backend != "sqlite":
        pytest.skip("checks how the sqlite backend refuses multi-tenancy")


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sql_str(value: str) -> str:
    """A SQL string literal (used for names this file generates or checks)."""
    return "'" + value.replace("'", "''") + "'"


def with_user(url: str, user: str) -> str:
    """`url` connecting as another role (the test cluster trusts every connection)."""
    parts = urlsplit(url)
    netloc = f"{user}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def psql_as(url: str, sql: str) -> subprocess.CompletedProcess:
    """Run `sql` with psql as whoever `url` names; the outcome, failures included."""
    return subprocess.run(
        [psql_path(), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql],
        capture_output=True,
        text=True,
        timeout=60,
    )


def schemas(url: str) -> set:
    return {row[0] for row in query_database(url, "SELECT nspname FROM pg_namespace")}


def roles(url: str) -> set:
    return {row[0] for row in query_database(url, "SELECT rolname FROM pg_roles")}


def role_exists(url: str, role: str) -> bool:
    return bool(query_database(url, f"SELECT 1 FROM pg_roles WHERE rolname = {sql_str(role)}"))


def schema_exists(url: str, schema: str) -> bool:
    return bool(query_database(url, f"SELECT 1 FROM pg_namespace WHERE nspname = {sql_str(schema)}"))


def schema_owner(url: str, schema: str) -> str:
    rows = query_database(url, f"SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = {sql_str(schema)}")
    assert len(rows) == 1, f"schema {schema!r} does not exist"
    return rows[0][0]


def tables_in(url: str, schema: str) -> set:
    return {
        row[0]
        for row in query_database(
            url, f"SELECT table_name FROM information_schema.tables WHERE table_schema = {sql_str(schema)}"
        )
    }


def stored_verifier(url: str, role: str):
    """pg_authid.rolpassword of `role`, read as the superuser (None when unset)."""
    rows = query_database(url, f"SELECT rolpassword FROM pg_authid WHERE rolname = {sql_str(role)}")
    assert len(rows) == 1, f"role {role!r} does not exist"
    return rows[0][0]


def registered_tenants(url: str) -> set:
    """(schema_name, username) pairs in DatabaseAdmin's registry (empty before its first use)."""
    if not schema_exists(url, "cloaca_admin"):
        return set()
    return set(query_database(url, "SELECT schema_name, username FROM cloaca_admin.tenants"))


def saslprep(password: str) -> str:
    """The password as PostgreSQL (and libpq) hash it: RFC 4013 SASLprep where it
    applies, the raw text where it does not (ASCII is taken as it is)."""
    if password.isascii():
        return password
    mapped = "".join(" " if stringprep.in_table_c12(c) else c for c in password if not stringprep.in_table_b1(c))
    prepared = unicodedata.normalize("NFKC", mapped)
    prohibited = (
        stringprep.in_table_a1,
        stringprep.in_table_c12,
        stringprep.in_table_c21,
        stringprep.in_table_c22,
        stringprep.in_table_c3,
        stringprep.in_table_c4,
        stringprep.in_table_c5,
        stringprep.in_table_c6,
        stringprep.in_table_c7,
        stringprep.in_table_c8,
        stringprep.in_table_c9,
    )
    if not prepared or any(test(c) for c in prepared for test in prohibited):
        return password
    if any(stringprep.in_table_d1(c) for c in prepared) and (
        any(stringprep.in_table_d2(c) for c in prepared)
        or not stringprep.in_table_d1(prepared[0])
        or not stringprep.in_table_d1(prepared[-1])
    ):
        return password
    return prepared


def scram_verifier_matches(verifier: str, password: str) -> bool:
    """Whether a stored `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>` verifier
    was made from `password`: both keys are recomputed from the salt and iteration count."""
    match = re.fullmatch(r"SCRAM-SHA-256\$(\d+):([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+):([A-Za-z0-9+/=]+)", verifier or "")
    assert match, f"not a SCRAM-SHA-256 verifier: {verifier!r}"
    iterations = int(match[1])
    assert iterations >= 4096, f"only {iterations} PBKDF2 iterations"
    salt, stored_key, server_key = (base64.b64decode(match[i]) for i in (2, 3, 4))
    salted = hashlib.pbkdf2_hmac("sha256", saslprep(password).encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    return hmac.compare_digest(hashlib.sha256(client_key).digest(), stored_key) and hmac.compare_digest(
        hmac.new(salted, b"Server Key", hashlib.sha256).digest(), server_key
    )


def assert_password_stored(url: str, role: str, password: str) -> None:
    verifier = stored_verifier(url, role)
    assert scram_verifier_matches(verifier, password), (
        f"the verifier stored for {role} was not made from the given password"
    )
    assert not scram_verifier_matches(verifier, password + "x"), "the check does not discriminate"


def rust_debug(text: str) -> str:
    """`text` as Rust's `{:?}` writes a str: double quotes, backslash escapes."""
    escapes = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t", "\0": "\\0"}
    return '"' + "".join(escapes.get(c) or (c if c.isprintable() else f"\\u{{{ord(c):x}}}") for c in text) + '"'


#: What with_schema refuses: BAD_NAMES but upper case, which it folds to lower case.
BAD_SCHEMA_NAMES = {key: name for key, name in BAD_NAMES.items() if key != "uppercase"}


def assert_shows_name(message: str, name: str) -> None:
    """The message quotes the refused name exactly: as Python's repr() writes it, or as
    the engine's Rust formatting ({:?}) does; either shows the value unambiguously."""
    assert repr(name) in message or rust_debug(name) in message, f"{name!r} is not shown in {message!r}"


def error_texts(exc: BaseException) -> str:
    """Every text an exception (and the exceptions it chains) carries."""
    texts, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        texts += [str(exc), repr(exc), *map(repr, exc.args)]
        exc = exc.__cause__ or exc.__context__
    return "\n".join(texts)


def assert_not_leaked(text: str, password: str) -> None:
    for form in {password, quote(password, safe=""), quote(password), repr(password)[1:-1]}:
        assert form not in text, f"the password appears in {text!r}"


def define_workflow(name: str) -> None:
    """Register a one-task workflow that marks its context."""
    with cloaca.WorkflowBuilder(name):

        @cloaca.task(id="mark")
        def mark(ctx):
            ctx.set("marked", True)
            return ctx


def run_workflow(runner, name: str, payload: dict):
    result = runner.execute(name, payload)
    assert result.status == "Completed", result.error_message
    assert result.final_context.to_dict() == {**payload, "marked": True}
    return result.execution_id


class Names:
    """Unique schema and role names for one test; the roles are dropped afterwards."""

    def __init__(self):
        self.roles = []

    def role(self, label: str) -> str:
        name = f"ct_{label}_{uuid.uuid4().hex[:8]}"
        self.roles.append(name)
        return name

    def schema(self, label: str) -> str:
        return f"cs_{label}_{uuid.uuid4().hex[:8]}"


def drop_roles(url: str, names) -> None:
    """Drop roles (and whatever they own or were granted in that database) as the superuser."""
    failures = []
    for role in names:
        sql = (
            "DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = "
            f"{sql_str(role)}) THEN EXECUTE 'DROP OWNED BY \"{role}\" CASCADE'; END IF; END $$; "
            f'DROP ROLE IF EXISTS "{role}"'
        )
        try:
            psql(url, sql)
        except AssertionError as exc:
            failures.append(str(exc))
    assert not failures, "could not drop the test's roles:\n" + "\n".join(failures)


@pytest.fixture
def names(postgres_only, fresh_database_url):
    """Names for this test; its roles are dropped (in the fresh database, before that
    database is dropped) in reverse order of creation, so an admin role goes last."""
    made = Names()
    try:
        yield made
    finally:
        drop_roles(fresh_database_url, reversed(made.roles))


# ---------------------------------------------------------------------------
# sqlite: no multi-tenancy
# ---------------------------------------------------------------------------


@pytest.mark.usefixtures("sqlite_only")
class TestSqlite:
    def test_with_schema_needs_postgres(self, fresh_database_url):
        path = sqlite_path_of(fresh_database_url)
        for url, schema in [
            (fresh_database_url, "tenant_a"),
            (fresh_database_url, "Bad-Name"),
            ("postgresql://postgres@127.0.0.1:5432/postgres", "tenant_a"),
        ]:
            with pytest.raises(ValueError) as excinfo:
                cloaca.DefaultRunner.with_schema(url, schema)
            assert "postgres" in str(excinfo.value).lower(), str(excinfo.value)
        assert not os.path.exists(path), "with_schema created the sqlite file"

    def test_tenant_classes_are_absent(self):
        for name in TENANT_CLASSES:
            assert not hasattr(cloaca, name), name
            assert name not in cloaca.__all__, name


# ---------------------------------------------------------------------------
# schema names
# ---------------------------------------------------------------------------


@pytest.mark.usefixtures("postgres_only")
class TestSchemaNames:
    def test_tenant_classes_are_exported(self):
        for name in TENANT_CLASSES:
            assert hasattr(cloaca, name), name
            assert name in cloaca.__all__, name

    @pytest.mark.parametrize("name", list(BAD_SCHEMA_NAMES.values()), ids=list(BAD_SCHEMA_NAMES))
    def test_a_bad_name_is_refused_before_connecting(self, name):
        """The URL points at a closed port: the error must be about the name."""
        port = closed_port()
        with pytest.raises(ValueError) as excinfo:
            cloaca.DefaultRunner.with_schema(f"postgresql://postgres@127.0.0.1:{port}/postgres", name)
        message = str(excinfo.value)
        assert_shows_name(message, name)
        assert f"127.0.0.1:{port}" not in message, message

    def test_a_good_name_gets_as_far_as_connecting(self):
        """The contrast to the test above: a valid name passes, and the closed port fails."""
        port = closed_port()
        with pytest.raises(ValueError) as excinfo:
            cloaca.DefaultRunner.with_schema(f"postgresql://postgres@127.0.0.1:{port}/postgres", "tenant_a")
        assert f"127.0.0.1:{port}" in str(excinfo.value)

    def test_bad_names_leave_the_database_untouched(self, fresh_database_url):
        schemas_before, roles_before = schemas(fresh_database_url), roles(fresh_database_url)
        for name in BAD_SCHEMA_NAMES.values():
            with pytest.raises(ValueError) as excinfo:
                cloaca.DefaultRunner.with_schema(fresh_database_url, name)
            assert_shows_name(str(excinfo.value), name)
        assert schemas(fresh_database_url) == schemas_before
        assert "public" in schemas_before
        assert roles(fresh_database_url) == roles_before
        assert tables_in(fresh_database_url, "public") == set()

    def test_good_names_are_accepted(self, fresh_database_url):
        for name in GOOD_NAMES:
            with cloaca.DefaultRunner.with_schema(fresh_database_url, name) as runner:
                assert runner.list_executions() == []
            assert REQUIRED_TABLES <= tables_in(fresh_database_url, name), name
        assert tables_in(fresh_database_url, "public") == set()


# ---------------------------------------------------------------------------
# isolation between schemas
# ---------------------------------------------------------------------------


@pytest.mark.usefixtures("postgres_only")
class TestIsolation:
    def test_two_schemas_on_one_database_see_only_their_own(self, fresh_database_url, workflow_name, db_query):
        url = fresh_database_url
        define_workflow(workflow_name)
        config = cloaca.DefaultRunnerConfig(max_concurrent_tasks=2)
        with (
            cloaca.DefaultRunner.with_schema(url, "s1") as one,
            cloaca.DefaultRunner.with_schema(url, "s2", config=config) as two,
        ):
            ones = [run_workflow(one, workflow_name, {"n": n}) for n in range(2)]
            twos = [run_workflow(two, workflow_name, {"n": 9})]

            assert sorted(r.execution_id for r in one.list_executions()) == sorted(ones)
            assert [r.execution_id for r in two.list_executions()] == twos
            assert one.list_executions(workflow_name=workflow_name, status="Completed") != []
            for execution_id in twos:
                with pytest.raises(KeyError):
                    one.get_execution(execution_id)
            for execution_id in ones:
                with pytest.raises(KeyError):
                    two.get_execution(execution_id)
                assert one.get_execution(execution_id).status == "Completed"

            schedule = one.register_cron_workflow(workflow_name, "0 0 1 1 *")
            assert [s["id"] for s in one.list_cron_schedules()] == [schedule]
            assert two.list_cron_schedules() == []
            with pytest.raises(KeyError):
                two.get_cron_schedule(schedule)

        # the tables are in the schemas, none in public
        found = {
            row[0]
            for row in db_query(
                url, "SELECT table_schema FROM information_schema.tables WHERE table_name = 'cloaca_executions'"
            )
        }
        assert found == {"s1", "s2"}
        assert REQUIRED_TABLES <= tables_in(url, "s1")
        assert REQUIRED_TABLES <= tables_in(url, "s2")
        assert tables_in(url, "public") == set()
        assert sorted(r[0] for r in db_query(url, "SELECT id FROM s1.cloaca_executions")) == sorted(ones)
        assert [r[0] for r in db_query(url, "SELECT id FROM s2.cloaca_executions")] == twos

        # a runner without a schema (public) sees neither tenant
        with cloaca.DefaultRunner(url) as plain:
            assert plain.list_executions() == []
            assert plain.list_cron_schedules() == []
            for execution_id in ones + twos:
                with pytest.raises(KeyError):
                    plain.get_execution(execution_id)

        # and a schema opened again still has its own state
        with cloaca.DefaultRunner.with_schema(url, "s1") as again:
            assert sorted(r.execution_id for r in again.list_executions()) == sorted(ones)
            assert [s["id"] for s in again.list_cron_schedules()] == [schedule]


# ---------------------------------------------------------------------------
# TenantConfig (no database needed)
# ---------------------------------------------------------------------------


@pytest.mark.usefixtures("postgres_only")
class TestTenantConfig:
    def test_attributes(self):
        config = cloaca.TenantConfig("tenant_a", "tenant_a_user")
        assert (config.schema_name, config.username, config.password) == ("tenant_a", "tenant_a_user", None)
        given = cloaca.TenantConfig("tenant_b", "tenant_b_user", "a given password")
        assert given.password == "a given password"
        assert cloaca.TenantConfig(schema_name="s", username="u", password=None).password is None

    @pytest.mark.parametrize("name", list(BAD_NAMES.values()), ids=list(BAD_NAMES))
    def test_a_bad_schema_name_or_username_is_refused(self, name):
        for args in [(name, "tenant_user"), ("tenant_schema", name)]:
            with pytest.raises(ValueError) as excinfo:
                cloaca.TenantConfig(*args)
            assert_shows_name(str(excinfo.value), name)

    def test_good_names_are_accepted(self):
        for name in GOOD_NAMES:
            assert cloaca.TenantConfig(name, name).schema_name == name

    @pytest.mark.parametrize(
        "args",
        [(1, "u"), ("s", 1), (None, "u"), ("s", b"u")],
        ids=["int-schema", "int-user", "none-schema", "bytes-user"],
    )
    def test_names_must_be_str(self, args):
        with pytest.raises(TypeError):
            cloaca.TenantConfig(*args)

    def test_password_rules(self):
        for ok in ["x", "x" * 1024, "ünïcode ✓", " spaces around "]:
            assert cloaca.TenantConfig("s", "u", ok).password == ok
        for bad in ["", "secret\0value", "\0", ("Lng7Pw" * 200)[:1025]]:
            with pytest.raises(ValueError) as excinfo:
                cloaca.TenantConfig("s", "u", bad)
            if len(bad) > 1:
                assert_not_leaked(error_texts(excinfo.value), bad[:20])
        for wrong in [123, b"bytes password", ["pw"], 1.5]:
            with pytest.raises(TypeError):
                cloaca.TenantConfig("s", "u", wrong)

    def test_repr_hides_the_password(self):
        password = "Very-Secret-Value-42"
        config = cloaca.TenantConfig("tenant_a", "tenant_a_user", password)
        for text in (repr(config), str(config)):
            assert_not_leaked(text, password)
        assert "tenant_a" in repr(config)


# ---------------------------------------------------------------------------
# DatabaseAdmin and tenants
# ---------------------------------------------------------------------------


@pytest.mark.usefixtures("postgres_only")
class TestDatabaseAdmin:
    def test_the_admin_url_must_be_a_reachable_postgres_server(self, tmp_path):
        for url in ["sqlite:///" + str(tmp_path / "admin.db").lstrip("/"), "mysql://root@localhost/db"]:
            with pytest.raises(ValueError):
                cloaca.DatabaseAdmin(url)
        assert not (tmp_path / "admin.db").exists()
        port = closed_port()
        with pytest.raises(ValueError) as excinfo:
            cloaca.DatabaseAdmin(f"postgresql://postgres@127.0.0.1:{port}/postgres")
        assert f"127.0.0.1:{port}" in str(excinfo.value)

    def test_create_tenant_needs_a_tenant_config(self, fresh_database_url):
        admin = cloaca.DatabaseAdmin(fresh_database_url)
        schemas_before = schemas(fresh_database_url)
        for wrong in [{"schema_name": "s", "username": "u"}, ("s", "u"), "s", None]:
            with pytest.raises(TypeError):
                admin.create_tenant(wrong)
        assert schemas(fresh_database_url) - schemas_before <= {"cloaca_admin"}

    def test_create_tenant_with_a_generated_password(self, fresh_database_url, names, db_query):
        admin_url = fresh_database_url + "?application_name=cloaca_tenant_test"
        admin = cloaca.DatabaseAdmin(admin_url)
        schema, user = names.schema("gen"), names.role("gen")

        creds = admin.create_tenant(cloaca.TenantConfig(schema, user))

        assert isinstance(creds, cloaca.TenantCredentials)
        assert (creds.schema_name, creds.username) == (schema, user)
        assert re.fullmatch(r"[A-Za-z0-9]{32}", creds.password), "the password is not 32 letters/digits"
        assert_password_stored(fresh_database_url, user, creds.password)

        admin_parts, parts = urlsplit(admin_url), urlsplit(creds.connection_string)
        assert parts.scheme in ("postgres", "postgresql")
        assert (parts.hostname, parts.port, parts.path, parts.query) == (
            admin_parts.hostname,
            admin_parts.port,
            admin_parts.path,
            admin_parts.query,
        )
        assert unquote(parts.username) == user
        assert unquote(parts.password) == creds.password

        # the role: may log in, owns its schema, holds nothing else
        attributes = db_query(
            fresh_database_url,
            "SELECT rolcanlogin, rolsuper, rolcreaterole, "
            "rolcreatedb, rolbypassrls, rolreplication "
            f"FROM pg_roles WHERE rolname = {sql_str(user)}",
        )
        assert attributes == [("t", "f", "f", "f", "f", "f")]
        assert schema_owner(fresh_database_url, schema) == user
        assert db_query(
            fresh_database_url, f"SELECT count(*) FROM pg_auth_members WHERE member = {sql_str(user)}::regrole"
        ) == [("0",)]
        privileges = db_query(
            fresh_database_url,
            f"SELECT has_database_privilege({sql_str(user)}, current_database(), 'CONNECT'), "
            f"has_database_privilege({sql_str(user)}, current_database(), 'CREATE'), "
            f"has_schema_privilege({sql_str(user)}, 'public', 'CREATE')",
        )
        assert privileges == [("t", "f", "f")]
        assert registered_tenants(fresh_database_url) == {(schema, user)}

        # read-only credentials, whose repr hides the password
        for attribute in ("username", "password", "schema_name", "connection_string"):
            with pytest.raises(AttributeError):
                setattr(creds, attribute, "changed")
        for text in (repr(creds), str(creds)):
            assert_not_leaked(text, creds.password)

        # the connection string works (as far as a trusting server shows) as the tenant
        done = psql_as(creds.connection_string, "SELECT current_user, current_setting('application_name')")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"{user}|cloaca_tenant_test"

        # every generated password is new
        other = admin.create_tenant(cloaca.TenantConfig(names.schema("gen2"), names.role("gen2")))
        assert re.fullmatch(r"[A-Za-z0-9]{32}", other.password)
        assert other.password != creds.password

    def test_a_given_password_is_stored_exactly_and_encoded_in_the_url(self, fresh_database_url, names):
        admin = cloaca.DatabaseAdmin(fresh_database_url)
        for label, password in GIVEN_PASSWORDS.items():
            schema, user = names.schema("pw"), names.role("pw")
            creds = admin.create_tenant(cloaca.TenantConfig(schema, user, password))

            assert creds.password == password, label
            assert_password_stored(fresh_database_url, user, password)
            parts = urlsplit(creds.connection_string)
            assert unquote(parts.password) == password, label
            assert unquote(parts.username) == user, label
            assert (parts.hostname, parts.port, parts.path) == (
                urlsplit(fresh_database_url).hostname,
                urlsplit(fresh_database_url).port,
                urlsplit(fresh_database_url).path,
            ), label
            for text in (repr(creds), str(creds)):
                assert_not_leaked(text, password)
            done = psql_as(creds.connection_string, "SELECT current_user")
            assert done.returncode == 0, f"{label}: {done.stderr}"
            assert done.stdout.strip() == user, label

    def test_a_tenant_runs_workflows_and_reaches_nothing_else(self, fresh_database_url, names, workflow_name, db_query):
        url = fresh_database_url
        admin = cloaca.DatabaseAdmin(url)
        a = admin.create_tenant(cloaca.TenantConfig(names.schema("a"), names.role("a")))
        b = admin.create_tenant(cloaca.TenantConfig(names.schema("b"), names.role("b"), "p@ss:w/rd?#%;'\" ü"))
        define_workflow(workflow_name)

        with cloaca.DefaultRunner.with_schema(a.connection_string, a.schema_name) as runner:
            a_id = run_workflow(runner, workflow_name, {"tenant": "a"})
            assert [r.execution_id for r in runner.list_executions()] == [a_id]
        with cloaca.DefaultRunner.with_schema(b.connection_string, b.schema_name) as runner:
            b_id = run_workflow(runner, workflow_name, {"tenant": "b"})
            assert [r.execution_id for r in runner.list_executions()] == [b_id]
            with pytest.raises(KeyError):
                runner.get_execution(a_id)

        # the state is in each tenant's schema, in tables the tenant owns
        for creds, execution_id in [(a, a_id), (b, b_id)]:
            assert REQUIRED_TABLES <= tables_in(url, creds.schema_name)
            owners = {
                row[0]
                for row in db_query(
                    url, f"SELECT tableowner FROM pg_tables WHERE schemaname = {sql_str(creds.schema_name)}"
                )
            }
            assert owners == {creds.username}
            assert db_query(url, f"SELECT id FROM {creds.schema_name}.cloaca_executions") == [(execution_id,)]
        assert tables_in(url, "public") == set()

        # as tenant a: its own tables are readable ...
        own = psql_as(a.connection_string, f"SELECT id FROM {a.schema_name}.cloaca_executions")
        assert own.returncode == 0 and own.stdout.strip() == a_id, own.stderr
        # ... the other tenant's are not
        other = psql_as(a.connection_string, f"SELECT id FROM {b.schema_name}.cloaca_executions")
        assert other.returncode != 0 and "permission denied" in other.stderr, other
        # nor a table the admin made in public without granting it
        psql(
            url,
            "CREATE TABLE public.admin_only (secret text); INSERT INTO public.admin_only VALUES ('not for tenants')",
        )
        public_read = psql_as(a.connection_string, "SELECT secret FROM public.admin_only")
        assert public_read.returncode != 0 and "permission denied" in public_read.stderr, public_read
        # and the tenant creates nothing outside its schema
        public_create = psql_as(a.connection_string, "CREATE TABLE public.mine (v int)")
        assert public_create.returncode != 0 and "permission denied" in public_create.stderr, public_create
        schema_create = psql_as(a.connection_string, "CREATE SCHEMA tenant_a_extra")
        assert schema_create.returncode != 0 and "permission denied" in schema_create.stderr, schema_create
        assert not schema_exists(url, "tenant_a_extra")

        # a runner as tenant a cannot open tenant b's schema, and changes nothing there
        before = db_query(url, f"SELECT * FROM {b.schema_name}.cloaca_executions")
        with pytest.raises((ValueError, RuntimeError)):
            cloaca.DefaultRunner.with_schema(a.connection_string, b.schema_name)
        assert db_query(url, f"SELECT * FROM {b.schema_name}.cloaca_executions") == before

    def test_an_existing_schema_or_role_is_refused_and_nothing_is_created(self, fresh_database_url, names, db_query):
        url = fresh_database_url
        admin = cloaca.DatabaseAdmin(url)
        password = "'; DROP ROLE postgres; -- ünï"

        # a schema that exists already (made by hand, or by with_schema)
        by_hand = names.schema("hand")
        psql(url, f"CREATE SCHEMA {by_hand}")
        with cloaca.DefaultRunner.with_schema(url, "by_runner"):
            pass
        for existing in (by_hand, "by_runner", "public"):
            user = names.role("noschema")
            with pytest.raises(ValueError) as excinfo:
                admin.create_tenant(cloaca.TenantConfig(existing, user, password))
            assert_not_leaked(error_texts(excinfo.value), password)
            assert not role_exists(url, user), f"role {user} was left behind"
        assert schema_owner(url, by_hand) == "postgres"
        assert REQUIRED_TABLES <= tables_in(url, "by_runner")

        # a role that exists already: left as it was
        existing_role = names.role("exists")
        psql(url, f'CREATE ROLE "{existing_role}" NOLOGIN')
        for user in (existing_role, "postgres"):
            schema = names.schema("norole")
            before = db_query(
                url, f"SELECT rolcanlogin, rolsuper, rolpassword FROM pg_authid WHERE rolname = {sql_str(user)}"
            )
            with pytest.raises(ValueError) as excinfo:
                admin.create_tenant(cloaca.TenantConfig(schema, user, password))
            assert_not_leaked(error_texts(excinfo.value), password)
            assert not schema_exists(url, schema), f"schema {schema} was left behind"
            assert (
                db_query(
                    url, f"SELECT rolcanlogin, rolsuper, rolpassword FROM pg_authid WHERE rolname = {sql_str(user)}"
                )
                == before
            )

        # the same tenant twice: the first one's password is not replaced
        schema, user = names.schema("twice"), names.role("twice")
        first = admin.create_tenant(cloaca.TenantConfig(schema, user))
        with pytest.raises(ValueError) as excinfo:
            admin.create_tenant(cloaca.TenantConfig(schema, user, password))
        assert_not_leaked(error_texts(excinfo.value), password)
        assert_password_stored(url, user, first.password)
        assert registered_tenants(url) == {(schema, user)}

    def test_remove_tenant_drops_its_schema_and_role(self, fresh_database_url, names, workflow_name):
        url = fresh_database_url
        admin = cloaca.DatabaseAdmin(url)
        a = admin.create_tenant(cloaca.TenantConfig(names.schema("a"), names.role("a")))
        b = admin.create_tenant(cloaca.TenantConfig(names.schema("b"), names.role("b")))
        define_workflow(workflow_name)
        with cloaca.DefaultRunner.with_schema(a.connection_string, a.schema_name) as runner:
            run_workflow(runner, workflow_name, {})
        assert REQUIRED_TABLES <= tables_in(url, a.schema_name)

        admin.remove_tenant(a.schema_name, a.username)

        assert not schema_exists(url, a.schema_name)
        assert not role_exists(url, a.username)
        assert registered_tenants(url) == {(b.schema_name, b.username)}
        assert schema_exists(url, b.schema_name) and role_exists(url, b.username)

        # once removed, it is no longer the admin's to remove ...
        with pytest.raises(ValueError):
            admin.remove_tenant(a.schema_name, a.username)
        # ... and the names are free again
        again = admin.create_tenant(cloaca.TenantConfig(a.schema_name, a.username))
        assert_password_stored(url, a.username, again.password)
        assert schema_owner(url, a.schema_name) == a.username

    def test_remove_tenant_refuses_what_the_admin_did_not_create(self, fresh_database_url, names):
        url = fresh_database_url
        admin = cloaca.DatabaseAdmin(url)
        a = admin.create_tenant(cloaca.TenantConfig(names.schema("a"), names.role("a")))
        b = admin.create_tenant(cloaca.TenantConfig(names.schema("b"), names.role("b")))
        with cloaca.DefaultRunner.with_schema(url, "made_by_runner"):
            pass
        stranger = names.role("stranger")
        psql(url, f'CREATE ROLE "{stranger}" LOGIN; CREATE SCHEMA stranger_schema AUTHORIZATION "{stranger}"')
        schemas_before, roles_before = schemas(url), roles(url)
        registry_before = registered_tenants(url)

        refused = [
            ("made_by_runner", stranger),  # with_schema's schema
            ("stranger_schema", stranger),  # made by hand
            ("public", a.username),  # public
            ("public", "postgres"),
            (a.schema_name, b.username),  # a real tenant's schema, the wrong user
            (b.schema_name, a.username),
            (a.schema_name, "postgres"),
            ("no_such_schema", "no_such_user"),  # nothing at all
        ]
        for schema, user in refused:
            with pytest.raises(ValueError):
                admin.remove_tenant(schema, user)

        for name in BAD_NAMES.values():
            for schema, user in [(name, a.username), (a.schema_name, name)]:
                with pytest.raises(ValueError) as excinfo:
                    admin.remove_tenant(schema, user)
                assert_shows_name(str(excinfo.value), name)

        assert schemas(url) == schemas_before
        assert roles(url) == roles_before
        assert registered_tenants(url) == registry_before == {(a.schema_name, a.username), (b.schema_name, b.username)}
        assert REQUIRED_TABLES <= tables_in(url, "made_by_runner")
        assert "public" in schemas(url)

    def test_the_password_appears_in_no_repr_and_no_error(self, fresh_database_url, names):
        url = fresh_database_url
        admin = cloaca.DatabaseAdmin(url)
        password = "Do-Not-Print-Me;'\"\\ 42"
        config = cloaca.TenantConfig(names.schema("leak"), names.role("leak"), password)
        for text in (repr(config), str(config)):
            assert_not_leaked(text, password)

        creds = admin.create_tenant(config)
        for text in (repr(creds), str(creds)):
            assert_not_leaked(text, password)

        # every refusal create_tenant can make for this config
        for retry in (
            config,
            cloaca.TenantConfig(config.schema_name, names.role("leak2"), password),
            cloaca.TenantConfig(names.schema("leak3"), config.username, password),
        ):
            with pytest.raises(ValueError) as excinfo:
                admin.create_tenant(retry)
            assert_not_leaked(error_texts(excinfo.value), password)
            assert_not_leaked(repr(retry), password)

    def test_an_admin_with_createrole_and_create_on_the_database_is_enough(
        self, fresh_database_url, names, workflow_name
    ):
        """No superuser needed: the rights docs/tenants.md asks of the admin role."""
        url = fresh_database_url
        database = urlsplit(url).path.lstrip("/")
        admin_role = names.role("admin")
        psql(
            url, f'CREATE ROLE "{admin_role}" LOGIN CREATEROLE; GRANT CREATE ON DATABASE "{database}" TO "{admin_role}"'
        )
        admin = cloaca.DatabaseAdmin(with_user(url, admin_role))

        creds = admin.create_tenant(cloaca.TenantConfig(names.schema("t"), names.role("t")))

        assert urlsplit(creds.connection_string).username == creds.username
        assert_password_stored(url, creds.username, creds.password)
        assert schema_owner(url, creds.schema_name) == creds.username
        define_workflow(workflow_name)
        with cloaca.DefaultRunner.with_schema(creds.connection_string, creds.schema_name) as runner:
            run_workflow(runner, workflow_name, {"as": "tenant"})

        admin.remove_tenant(creds.schema_name, creds.username)
        assert not schema_exists(url, creds.schema_name)
        assert not role_exists(url, creds.username)
