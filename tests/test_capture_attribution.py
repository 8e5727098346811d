"""Attribution a hostile database role cannot forge (issue #18): `--setup` revokes `pg_logical_emit_message` from
PUBLIC, messages come only from the `auditlock_capture` SECURITY DEFINER functions, capture refuses to start while
another role can still emit (unless `[capture] attribution = "open"`), and a transaction that proves no one is
recorded as `db:unknown` with a named problem.

Real PostgreSQL with `wal_level = logical`, real roles and sessions, `auditlock capture` as a subprocess.
"""

from __future__ import annotations

import uuid

import psycopg
import pytest

from auditlock.config import load_config
from auditlock.errors import ConfigError
from auditlock.handler.context import actor
from auditlock.integrations.postgres import bind_transaction
from tests.support.capture_env import CaptureEnv

EMIT_TEXT = "pg_catalog.pg_logical_emit_message(boolean, text, text)"
EMIT_BYTEA = "pg_catalog.pg_logical_emit_message(boolean, text, bytea)"
FORGED_SESSION = "SELECT pg_logical_emit_message(true, 'auditlock.session', '{\"role\": \"postgres\"}')"
FORGED_ACTOR = "SELECT pg_logical_emit_message(true, 'auditlock.actor', '{\"actor_id\": \"user:1\"}')"
BIND_ACTOR = "auditlock_capture.bind_actor(text, text, text, text, text)"
INSERT = "INSERT INTO orders VALUES (%s, 'new', 5, NULL, NULL)"


def new_role(env: CaptureEnv, prefix: str, attributes: str = "LOGIN") -> str:
    """A role of the (cluster-wide) test server with a unique name, allowed to write `orders`."""
    role = f"{prefix}_{uuid.uuid4().hex[:8]}"
    env.sql(f"CREATE ROLE {role} {attributes}", f"GRANT SELECT, INSERT, UPDATE, DELETE ON orders TO {role}")
    return role


def as_role(env: CaptureEnv, role: str) -> psycopg.Connection[tuple[object, ...]]:
    """A session of `role` on the test database."""
    return psycopg.connect(env.server.dsn(env.database, user=role))


def public_executes(env: CaptureEnv, signature: str) -> bool:
    """Whether PUBLIC holds EXECUTE on the function."""
    return bool(env.sql(f"SELECT has_function_privilege('public', '{signature}', 'EXECUTE')")[0][0])


class TestSetupRevokes:
    """--setup revokes EXECUTE on pg_logical_emit_message from PUBLIC, prints it, and is idempotent."""

    def test_setup_revokes_both_forms_from_public(self, capture_env: CaptureEnv) -> None:
        """Both overloads lose PUBLIC's EXECUTE; the REVOKEs are printed."""
        out = capture_env.setup().stdout
        assert f"REVOKE EXECUTE ON FUNCTION {EMIT_TEXT} FROM PUBLIC;" in out
        assert f"REVOKE EXECUTE ON FUNCTION {EMIT_BYTEA} FROM PUBLIC;" in out
        assert not public_executes(capture_env, EMIT_TEXT)
        assert not public_executes(capture_env, EMIT_BYTEA)

    def test_second_setup_revokes_and_grants_nothing_again(self, capture_env: CaptureEnv) -> None:
        """A second --setup prints no REVOKE of pg_logical_emit_message and no GRANT to an app role."""
        app = new_role(capture_env, "app")
        capture_env.write_config(f'app_roles = ["{app}"]')
        first = capture_env.setup().stdout
        assert f'GRANT EXECUTE ON FUNCTION auditlock_capture.bind_actor(text, text, text, text, text) TO "{app}";' \
            in first
        again = capture_env.setup().stdout
        assert "pg_logical_emit_message(boolean" not in again
        assert f'TO "{app}"' not in again
        assert not public_executes(capture_env, EMIT_TEXT)

    def test_dry_run_prints_the_new_statements(self, capture_env: CaptureEnv) -> None:
        """--dry-run prints the definer functions, the grant to the app role and the REVOKEs, and changes nothing."""
        app = new_role(capture_env, "app")
        capture_env.write_config(f'app_roles = ["{app}"]')
        out = capture_env.capture("--setup", "--dry-run").stdout
        assert "CREATE OR REPLACE FUNCTION auditlock_capture.emit_session() RETURNS void" in out
        assert "CREATE OR REPLACE FUNCTION auditlock_capture.bind_actor(" in out
        assert "SECURITY DEFINER SET search_path = pg_catalog, pg_temp" in out
        assert f'GRANT EXECUTE ON FUNCTION auditlock_capture.bind_actor(text, text, text, text, text) TO "{app}"' in out
        assert f"REVOKE EXECUTE ON FUNCTION {EMIT_TEXT} FROM PUBLIC" in out
        assert public_executes(capture_env, EMIT_TEXT)

    def test_a_missing_app_role_is_a_note(self, capture_env: CaptureEnv) -> None:
        """An app role that does not exist is named on stderr; the rest of the setup is done."""
        capture_env.write_config('app_roles = ["no_such_role_here"]')
        done = capture_env.setup()
        assert "'no_such_role_here', which is not a role of this server" in done.stderr
        assert not public_executes(capture_env, EMIT_TEXT)

    def test_role_that_may_not_revoke_says_so(self, capture_env: CaptureEnv) -> None:
        """A non-superuser setup role owning the tables sets up, leaves PUBLIC's EXECUTE and says so with the fix."""
        owner = new_role(capture_env, "owner", "LOGIN REPLICATION")
        capture_env.sql(f"ALTER TABLE orders OWNER TO {owner}", f'GRANT CREATE ON DATABASE "{capture_env.database}" '
                        f"TO {owner}")
        capture_env.write_config(dsn=capture_env.server.dsn(capture_env.database, user=owner))
        done = capture_env.setup()
        assert f"pg_logical_emit_message can be executed by PUBLIC and role '{owner}' may not revoke it" in done.stderr
        assert f"REVOKE EXECUTE ON FUNCTION {EMIT_TEXT} FROM PUBLIC" in done.stderr
        assert f"REVOKE EXECUTE ON FUNCTION {EMIT_BYTEA} FROM PUBLIC" in done.stderr
        assert done.stderr.count("attribution is forgeable") == 1
        assert 'attribution = "open"' in done.stderr
        assert "RDS/Aurora" in done.stderr
        assert "REVOKE EXECUTE ON FUNCTION pg_catalog" not in done.stdout
        assert public_executes(capture_env, EMIT_TEXT)
        refused = capture_env.capture("--once", check=False)
        assert refused.returncode == 1
        assert "can be executed by PUBLIC" in refused.stderr

    def test_superuser_setup_over_a_non_superuser_install_keeps_writes_working(self, capture_env: CaptureEnv) -> None:
        """The superuser's --setup grants EXECUTE to the non-superuser owner of the functions before revoking, so
        another role's writes still emit their session message."""
        owner = new_role(capture_env, "owner", "LOGIN REPLICATION")
        capture_env.sql(f"ALTER TABLE orders OWNER TO {owner}", f'GRANT CREATE ON DATABASE "{capture_env.database}" '
                        f"TO {owner}")
        capture_env.write_config(dsn=capture_env.server.dsn(capture_env.database, user=owner))
        capture_env.setup()
        capture_env.write_config()
        out = capture_env.setup().stdout
        assert out.index(f'GRANT EXECUTE ON FUNCTION {EMIT_TEXT} TO "{owner}"') < out.index(
            f"REVOKE EXECUTE ON FUNCTION {EMIT_TEXT} FROM PUBLIC")
        writer = new_role(capture_env, "writer")
        with as_role(capture_env, writer) as conn:
            conn.execute(INSERT, (1,))
        capture_env.capture("--once")
        (created,) = capture_env.events()
        assert (created["actor_id"], "attribution_problem" in created["payload"]) == (f"db:{writer}", False)


class TestLeastPrivilegeCapture:
    """Capture's own role needs no EXECUTE on pg_logical_emit_message: --once flushes through flush_wal()."""

    def test_replication_role_captures_once_after_the_revoke(self, capture_env: CaptureEnv) -> None:
        """A non-superuser REPLICATION role runs --once on a restricted database and records the change."""
        capture_env.setup()
        capture_role = new_role(capture_env, "capture", "LOGIN REPLICATION")
        capture_env.sql(INSERT, params=(1,))
        capture_env.write_config(dsn=capture_env.server.dsn(capture_env.database, user=capture_role))
        capture_env.capture("--once")
        (created,) = capture_env.events()
        assert created["actor_id"] == "db:postgres"


class TestForgery:
    """With the restricted setup a role that writes a mapped table cannot say it is someone else."""

    def test_non_app_role_cannot_emit_messages(self, capture_env: CaptureEnv) -> None:
        """A writing role gets permission denied for a session message, an actor message and bind_actor."""
        capture_env.setup()
        intruder = new_role(capture_env, "intruder")
        for statement in (FORGED_SESSION, FORGED_ACTOR, "SELECT pg_logical_emit_message(true, 'auditlock.actor', "
                          "'{}'::bytea)", "SELECT auditlock_capture.bind_actor('user:1', 'user', NULL, NULL, NULL)"):
            with as_role(capture_env, intruder) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement.encode())

    def test_non_app_role_change_is_attributed_to_itself(self, capture_env: CaptureEnv) -> None:
        """A role that tried and failed to bind an actor, then wrote, is recorded as itself, without a problem."""
        capture_env.setup()
        intruder = new_role(capture_env, "intruder")
        with as_role(capture_env, intruder) as conn, actor("user:1"), \
                pytest.raises(psycopg.errors.InsufficientPrivilege):
            bind_transaction(conn)
        with as_role(capture_env, intruder) as conn:
            conn.execute(INSERT, (1,))
        capture_env.capture("--once")
        (created,) = capture_env.events()
        assert (created["actor_id"], created["actor_type"], created["payload"]["db_role"]) == (
            f"db:{intruder}", "db", intruder)
        assert "attribution_problem" not in created["payload"]

    def test_app_role_binds_an_actor(self, capture_env: CaptureEnv) -> None:
        """The role in app_roles binds an actor: the record carries the actor and the role that bound it."""
        app = new_role(capture_env, "app")
        capture_env.write_config(f'app_roles = ["{app}"]')
        capture_env.setup()
        with as_role(capture_env, app) as conn, actor("user:82", ip="198.51.100.4"), conn.transaction():
            assert bind_transaction(conn)
            conn.execute(INSERT, (1,))
        capture_env.capture("--once")
        (created,) = capture_env.events()
        assert (created["actor_id"], created["actor_ip"], created["payload"]["db_role"]) == (
            "user:82", "198.51.100.4", app)
        assert "attribution_problem" not in created["payload"]

    def test_member_of_an_app_role_cannot_bind(self, capture_env: CaptureEnv) -> None:
        """A member of the app role may execute bind_actor (SET ROLE), but capture sees its own session role and
        ignores the actor, naming why."""
        app = new_role(capture_env, "app", "NOLOGIN")
        capture_env.write_config(f'app_roles = ["{app}"]')
        capture_env.setup()
        member = new_role(capture_env, "member")
        capture_env.sql(f"GRANT {app} TO {member}")
        with as_role(capture_env, member) as conn, actor("user:82"), conn.transaction():
            conn.execute(f"SET LOCAL ROLE {app}".encode())
            assert bind_transaction(conn)
            conn.execute(INSERT, (1,))
        capture_env.capture("--once")
        (created,) = capture_env.events()
        assert created["actor_id"] == f"db:{member}"
        assert f"bound by role '{member}', which is not in [capture] app_roles" in created["payload"][
            "attribution_problem"]

    def test_pre_set_marker_proves_no_one(self, capture_env: CaptureEnv) -> None:
        """A role that sets the trigger's marker for its transaction (no session message) is recorded as
        db:unknown with the problem named — never dropped, never another role."""
        capture_env.setup()
        intruder = new_role(capture_env, "intruder")
        with as_role(capture_env, intruder) as conn:
            conn.execute("SELECT set_config('auditlock.session_noted', pg_current_xact_id()::text, true)")
            conn.execute(INSERT, (1,))
        capture_env.capture("--once")
        (created,) = capture_env.events()
        assert (created["actor_id"], created["actor_type"]) == ("db:unknown", "db")
        assert "no auditlock.session message came before this change" in created["payload"]["attribution_problem"]

    def test_superuser_actor_message_without_a_role_is_ignored(self, capture_env: CaptureEnv) -> None:
        """An actor message emitted around bind_actor (no role in it) is ignored and named, restricted or not."""
        capture_env.setup()
        with psycopg.connect(capture_env.dsn) as conn:
            conn.execute(FORGED_ACTOR.encode())
            conn.execute(INSERT, (1,))
        capture_env.capture("--once")
        (created,) = capture_env.events()
        assert created["actor_id"] == "db:postgres"
        assert "names no role" in created["payload"]["attribution_problem"]


class TestStartRefusal:
    """Restricted attribution (the default) refuses to start while another role can emit; "open" starts."""

    def test_refuses_while_public_can_emit(self, capture_env: CaptureEnv) -> None:
        """EXECUTE granted back to PUBLIC: capture exits 1 naming --setup and attribution = "open"."""
        capture_env.setup()
        capture_env.sql(f"GRANT EXECUTE ON FUNCTION {EMIT_TEXT} TO PUBLIC")
        done = capture_env.capture("--once", check=False)
        assert done.returncode == 1
        assert f"{EMIT_TEXT} can be executed by PUBLIC" in done.stderr
        assert "run `auditlock capture --setup` as a superuser" in done.stderr
        assert 'attribution = "open"' in done.stderr

    def test_refuses_a_role_granted_emit(self, capture_env: CaptureEnv) -> None:
        """A role granted EXECUTE (directly or as a member) is named with the REVOKE that fixes it."""
        capture_env.setup()
        granted = new_role(capture_env, "granted", "NOLOGIN")
        member = new_role(capture_env, "member")
        capture_env.sql(f"GRANT EXECUTE ON FUNCTION {EMIT_BYTEA} TO {granted}", f"GRANT {granted} TO {member}")
        done = capture_env.capture("--once", check=False)
        assert done.returncode == 1
        assert f"'{granted}'" in done.stderr
        assert f"'{member}'" in done.stderr
        assert f"REVOKE EXECUTE ON FUNCTION {EMIT_BYTEA} FROM <role>" in done.stderr

    def test_refuses_bind_actor_for_public(self, capture_env: CaptureEnv) -> None:
        """bind_actor granted to PUBLIC (anyone could bind an application actor) is refused with the REVOKE."""
        capture_env.setup()
        capture_env.sql(f"GRANT EXECUTE ON FUNCTION {BIND_ACTOR} TO PUBLIC")
        done = capture_env.capture("--once", check=False)
        assert done.returncode == 1
        assert f"REVOKE EXECUTE ON FUNCTION {BIND_ACTOR} FROM PUBLIC" in done.stderr

    def test_refuses_an_older_setup(self, capture_env: CaptureEnv) -> None:
        """A database set up before emit_session() existed is refused until --setup runs again."""
        capture_env.setup()
        capture_env.sql("DROP FUNCTION auditlock_capture.emit_session()")
        done = capture_env.capture("--once", check=False)
        assert done.returncode == 1
        assert "auditlock_capture.emit_session() is missing" in done.stderr

    def test_open_starts_and_takes_any_message(self, capture_env: CaptureEnv) -> None:
        """With attribution = "open" capture starts while PUBLIC can emit, and a role's forged session message is
        taken as the database's word (what "open" means)."""
        capture_env.write_config('attribution = "open"')
        capture_env.setup()
        capture_env.sql(f"GRANT EXECUTE ON FUNCTION {EMIT_TEXT} TO PUBLIC")
        intruder = new_role(capture_env, "intruder")
        with as_role(capture_env, intruder) as conn:
            conn.execute(INSERT, (1,))
            conn.execute(FORGED_SESSION.encode())
            conn.execute(INSERT, (2,))
        capture_env.capture("--once")
        assert [e["actor_id"] for e in capture_env.events()] == [f"db:{intruder}", "db:postgres"]


class TestConfig:
    """`[capture] app_roles` and `attribution` are validated."""

    @pytest.mark.parametrize(("line", "message"), [
        ('app_roles = ["App-Role"]', "not a lowercase PostgreSQL role name"),
        ('app_roles = ["public"]', "PUBLIC or a predefined role"),
        ('app_roles = ["pg_monitor"]', "PUBLIC or a predefined role"),
        ('attribution = "closed"', "not an allowed value"),
    ])
    def test_bad_values_are_refused(self, capture_env: CaptureEnv, line: str, message: str) -> None:
        """A bad role name, PUBLIC / a predefined role, or an unknown attribution mode fails the config load."""
        capture_env.write_config(line)
        with pytest.raises(ConfigError, match=message):
            load_config(capture_env.config_path)

    def test_defaults(self, capture_env: CaptureEnv) -> None:
        """Without the keys: no app roles, restricted attribution."""
        settings = load_config(capture_env.config_path).capture
        assert (settings.app_roles, settings.attribution) == ((), "restricted")
