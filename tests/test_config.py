"""Configuration: loading, environment overrides, and errors that name the key and the problem."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from auditlock import ConfigError, load_config
from auditlock.config import build_config
from auditlock.config.model import CaptureConfig, ErasureConfig, HmacKeySource
from tests.conftest import config_dict

EXAMPLE = """
service = "billing-api"

[spool]
dir = "spool"
durability = "group"

[events]
include = ["order.*", "auth.*"]

[targets.Order]
fields = ["status", "total"]
retention = "orders"

[retention]
default = "standard"

[retention.classes.standard]
days = 400
mode = "GOVERNANCE"
hot_days = 90

[retention.classes.orders]
days = 3650

[retention.events]
"auth.*" = "standard"

[sink]
bucket = "audit-archive"
"""


def problems_of(doc: dict[str, Any], environ: dict[str, str] | None = None) -> list[str]:
    """The problems a ConfigError lists for a document."""
    with pytest.raises(ConfigError) as info:
        build_config(doc, environ=environ)
    return info.value.problems


class TestLoading:
    def test_loads_a_file_with_defaults(self, tmp_path: Path) -> None:
        """A minimal file loads, typed, with documented defaults filled in."""
        path = tmp_path / "auditlock.toml"
        path.write_text(EXAMPLE)
        config = load_config(path, environ={})
        assert config.service == "billing-api"
        assert config.spool.dir == tmp_path / "spool"
        assert config.spool.on_error == "raise"
        assert config.events.max_event_bytes == 65536
        assert config.targets["Order"].fields == frozenset({"status", "total"})
        assert config.retention.classes["orders"].mode == "COMPLIANCE"
        assert config.sink.bucket == "audit-archive"

    def test_path_from_environment(self, tmp_path: Path) -> None:
        """Without an argument the path comes from AUDITLOCK_CONFIG."""
        path = tmp_path / "elsewhere.toml"
        path.write_text(EXAMPLE)
        assert load_config(environ={"AUDITLOCK_CONFIG": str(path)}).service == "billing-api"

    def test_config_is_immutable(self, tmp_path: Path) -> None:
        """A loaded config cannot be changed."""
        path = tmp_path / "auditlock.toml"
        path.write_text(EXAMPLE)
        config = load_config(path, environ={})
        with pytest.raises(AttributeError):
            config.service = "other"  # type: ignore[misc]
        with pytest.raises(TypeError):
            config.targets["X"] = config.targets["Order"]  # type: ignore[index]

    def test_missing_file_is_named(self, tmp_path: Path) -> None:
        """A missing file is a ConfigError naming the path."""
        with pytest.raises(ConfigError, match=r"nope\.toml does not exist"):
            load_config(tmp_path / "nope.toml", environ={})

    def test_invalid_toml_is_named(self, tmp_path: Path) -> None:
        """A file that is not TOML is a ConfigError naming the file."""
        path = tmp_path / "bad.toml"
        path.write_text("service = \n")
        with pytest.raises(ConfigError, match=r"bad\.toml is not valid TOML"):
            load_config(path, environ={})


class TestEnvironmentOverrides:
    def test_overrides_deploy_time_values(self, tmp_path: Path) -> None:
        """AUDITLOCK_<SECTION>_<KEY> overrides a key, parsed by its type."""
        path = tmp_path / "auditlock.toml"
        path.write_text(EXAMPLE)
        env = {
            "AUDITLOCK_SPOOL_DIR": "/var/spool/auditlock",
            "AUDITLOCK_SINK_BUCKET": "prod-audit",
            "AUDITLOCK_SINK_ENDPOINT_URL": "http://127.0.0.1:9000",
            "AUDITLOCK_SPOOL_FLUSH_INTERVAL_MS": "50",
            "AUDITLOCK_EVENTS_KEEP_IN_APP_LOG": "true",
            "AUDITLOCK_SERVICE": "renamed",
        }
        config = load_config(path, environ=env)
        assert config.spool.dir == Path("/var/spool/auditlock")
        assert config.sink.bucket == "prod-audit"
        assert config.sink.endpoint_url == "http://127.0.0.1:9000"
        assert config.spool.flush_interval_ms == 50
        assert config.events.keep_in_app_log is True
        assert config.service == "renamed"

    def test_unknown_override_suggests_the_key(self, tmp_path: Path) -> None:
        """A misspelt override of a known section is an error with a suggestion."""
        problems = problems_of(config_dict(tmp_path), {"AUDITLOCK_SINK_BUKET": "x"})
        assert problems == [
            "environment variable AUDITLOCK_SINK_BUKET names no key of [sink]; did you mean 'AUDITLOCK_SINK_BUCKET'?"
        ]

    def test_bad_override_value_is_named(self, tmp_path: Path) -> None:
        """An override that does not parse names the variable and the expected type."""
        problems = problems_of(config_dict(tmp_path), {"AUDITLOCK_SPOOL_MAX_BYTES": "lots"})
        assert problems == ["environment variable AUDITLOCK_SPOOL_MAX_BYTES='lots' is not an integer >= 65536"]

    def test_a_secret_variable_named_like_an_override_is_not_one(self, tmp_path: Path) -> None:
        """A variable the file names as a secret source (dsn_env = "AUDITLOCK_CAPTURE_DSN") is not read as an
        override of [capture], whose missing key `dsn` would fail every load where it is set."""
        doc = config_dict(tmp_path)
        doc["capture"] = {"dsn_env": "AUDITLOCK_CAPTURE_DSN"}
        config = build_config(doc, environ={"AUDITLOCK_CAPTURE_DSN": "host=db user=auditlock_capture"})
        assert config.capture is not None
        assert config.capture.dsn_env == "AUDITLOCK_CAPTURE_DSN"

    def test_unrelated_variables_are_ignored(self, tmp_path: Path) -> None:
        """Variables that name no config section (AUDITLOCK_REQUIRE_RGW) are not overrides."""
        build_config(config_dict(tmp_path), environ={"AUDITLOCK_REQUIRE_RGW": "1"})


class TestErrors:
    def test_unknown_key_suggests(self, tmp_path: Path) -> None:
        """An unknown key is an error with a did-you-mean."""
        problems = problems_of(config_dict(tmp_path, spool={"durabilty": "sync"}))
        assert problems == ["unknown key 'durabilty' in [spool]; did you mean 'durability'?"]

    def test_bad_choice_lists_the_allowed(self, tmp_path: Path) -> None:
        """A value outside its choices names key, value and the allowed values."""
        problems = problems_of(config_dict(tmp_path, spool={"durability": "fast"}))
        assert problems == ["spool.durability = 'fast' is invalid: not an allowed value; allowed: group, process, "
                            'sync; expected one of "sync", "group", "process"']

    def test_wrong_type(self, tmp_path: Path) -> None:
        """A value of the wrong type names the key and the expected type."""
        problems = problems_of(config_dict(tmp_path, events={"keep_in_app_log": "yes"}))
        assert problems == ["events.keep_in_app_log = 'yes' is invalid: not a boolean; expected true or false"]

    def test_every_problem_is_reported_at_once(self, tmp_path: Path) -> None:
        """All problems of a document are listed in one error."""
        doc = config_dict(tmp_path, spool={"max_bytes": 1, "on_error": "ignore"}, sink={"batch_max_age_s": -1})
        assert len(problems_of(doc)) == 3

    def test_required_keys(self, tmp_path: Path) -> None:
        """Missing service, spool dir and include are each named."""
        doc = config_dict(tmp_path)
        del doc["service"]
        del doc["spool"]["dir"]
        del doc["events"]["include"]
        problems = problems_of(doc)
        assert "service is required (a string)" in problems
        assert any(p.startswith("[spool] dir is required") for p in problems)
        assert any(p.startswith("[events] include is required") for p in problems)

    def test_undefined_retention_class(self, tmp_path: Path) -> None:
        """A class referenced but not defined is named with where it is referenced."""
        doc = config_dict(tmp_path)
        doc["targets"]["Order"]["retention"] = "order"
        problems = problems_of(doc)
        assert problems == ['targets.Order.retention = "order" names no class in [retention.classes]; '
                            "did you mean 'orders'?"]

    def test_hot_days_over_days(self, tmp_path: Path) -> None:
        """hot_days above days is refused."""
        doc = config_dict(tmp_path)
        doc["retention"]["classes"]["standard"]["hot_days"] = 500
        assert problems_of(doc) == ["[retention.classes.standard] hot_days = 500 is more than days = 400"]

    @pytest.mark.parametrize("key", ["fields", "hmac"])
    def test_a_target_field_named_changes_is_refused(self, tmp_path: Path, key: str) -> None:
        """A target field named `changes` is refused: it would stand where every reader expects the changes."""
        doc = config_dict(tmp_path)
        doc["targets"]["Order"][key] = [*doc["targets"]["Order"].get(key, []), "changes"]
        problems = [p for p in problems_of(doc) if "changes" in p]
        assert problems == [f'[targets.Order] {key} names "changes", auditlock\'s own payload key (before/after of '
                            'changed fields); rename the application\'s field, e.g. "change_note"']

    def test_hmac_fields_need_a_key(self, tmp_path: Path) -> None:
        """hmac fields without [hmac] key_env/key_file are refused."""
        doc = config_dict(tmp_path)
        del doc["hmac"]
        problems = problems_of(doc)
        assert len(problems) == 1
        assert "hmac fields need a key" in problems[0]

    def test_missing_hmac_key_at_runtime(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A configured key variable that is not set is named when the key is loaded."""
        monkeypatch.delenv("AUDITLOCK_TEST_HMAC")
        config = build_config(config_dict(tmp_path))
        with pytest.raises(ConfigError, match="AUDITLOCK_TEST_HMAC is not set"):
            config.hmac.load_key()


class TestSecretFiles:
    """A secret read from a file (`[hmac] key_file`, `[erasure]`/`[capture] dsn_file`): whitespace around it is
    dropped; a missing, empty or undecodable file is a `ConfigError` naming the key and the file, never a crash."""

    def test_key_and_dsn_are_read_without_surrounding_whitespace(self, tmp_path: Path) -> None:
        """The file's content, stripped."""
        secret = tmp_path / "secret"
        secret.write_text("  host=db dbname=app\n")
        assert HmacKeySource(key_file=secret).load("[hmac]") == b"host=db dbname=app"
        assert CaptureConfig(dsn_file=secret).load_dsn() == "host=db dbname=app"

    @pytest.mark.parametrize("content", [b"", b" \n\t", "\u00a0\n".encode()], ids=["empty", "blank", "unicode-blank"])
    def test_an_empty_dsn_file_is_named(self, tmp_path: Path, content: bytes) -> None:
        """Nothing but whitespace: `... is empty` with what to write."""
        secret = tmp_path / "dsn"
        secret.write_bytes(content)
        with pytest.raises(ConfigError, match=re.escape(f"[erasure] dsn_file: {secret} is empty; write the "
                                                        "SQLAlchemy URL into it")):
            ErasureConfig(store="sql", dsn_file=secret).load_dsn()

    def test_a_dsn_file_that_is_not_utf8_is_named(self, tmp_path: Path) -> None:
        """Bytes that are not UTF-8 are a `ConfigError`, not a `UnicodeDecodeError` out of the loader."""
        secret = tmp_path / "dsn"
        secret.write_bytes(b"host=\xff\xfe")
        with pytest.raises(ConfigError, match=re.escape(f"[capture] dsn_file: {secret} is not UTF-8 text")):
            CaptureConfig(dsn_file=secret).load_dsn()

    def test_a_missing_key_file_is_named(self, tmp_path: Path) -> None:
        """An unreadable key file names the key, the file and the reason."""
        missing = tmp_path / "nope"
        with pytest.raises(ConfigError, match=re.escape(f"[hmac.keys.k2] key_file: cannot read {missing}: No such "
                                                        "file or directory")):
            HmacKeySource(key_file=missing).load("[hmac.keys.k2]")


class TestRetentionClasses:
    def test_event_pattern_wins_over_target(self, tmp_path: Path) -> None:
        """An event-type rule beats the target's class, which beats the default."""
        config = build_config(config_dict(tmp_path))
        order = config.targets["Order"]
        assert config.retention.class_for("auth.login_failed", order) == "security"
        assert config.retention.class_for("order.updated", order) == "orders"
        assert config.retention.class_for("customer.updated", config.targets["Customer"]) == "standard"


class TestQuerySection:
    def test_defaults_and_values(self, tmp_path: Path) -> None:
        """[query] is optional (10 GiB, no directory); cache_dir is relative to the file, 0 is a valid bound."""
        default = build_config(config_dict(tmp_path)).query
        assert (default.cache_dir, default.cache_max_bytes) == (None, 10 * 2**30)
        doc = config_dict(tmp_path, query={"cache_dir": "cache", "cache_max_bytes": 0})
        query = build_config(doc, base_dir=tmp_path).query
        assert (query.cache_dir, query.cache_max_bytes) == (tmp_path / "cache", 0)

    def test_environment_override(self, tmp_path: Path) -> None:
        """AUDITLOCK_QUERY_CACHE_MAX_BYTES sets the bound."""
        config = build_config(config_dict(tmp_path), environ={"AUDITLOCK_QUERY_CACHE_MAX_BYTES": "1048576"})
        assert config.query.cache_max_bytes == 2**20

    @pytest.mark.parametrize(("value", "problem"), [
        (-1, "query.cache_max_bytes = -1 is invalid: too small; expected an integer >= 0"),
        ("10G", "query.cache_max_bytes = '10G' is invalid: wrong type; expected an integer >= 0"),
    ])
    def test_bad_bound_names_the_key(self, tmp_path: Path, value: Any, problem: str) -> None:
        """A negative or non-integer cache_max_bytes is refused, naming the key."""
        assert problems_of(config_dict(tmp_path, query={"cache_max_bytes": value})) == [problem]

    def test_bad_override_names_the_variable(self, tmp_path: Path) -> None:
        """An unparseable AUDITLOCK_QUERY_CACHE_MAX_BYTES names the variable."""
        problems = problems_of(config_dict(tmp_path), {"AUDITLOCK_QUERY_CACHE_MAX_BYTES": "lots"})
        assert problems == ["environment variable AUDITLOCK_QUERY_CACHE_MAX_BYTES='lots' is not an integer >= 0"]


class TestExampleConfig:
    """examples/auditlock.toml stays true: it loads as shipped and with every optional block uncommented."""

    EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "auditlock.toml"

    def test_example_loads_as_shipped(self) -> None:
        """The shipped example is a valid config."""
        config = load_config(self.EXAMPLE, environ={})
        assert config.service == "shop-api"

    def test_example_loads_with_its_optional_blocks_enabled(self, tmp_path: Path) -> None:
        """Uncommenting the example's `# key = value` and `# [section]` lines gives a valid config using each block."""
        enabled = re.sub(r"^# (\[[^\]]+\]|[a-z_]+ = )", r"\1", self.EXAMPLE.read_text(), flags=re.M)
        path = tmp_path / "auditlock.toml"
        path.write_text(enabled)
        config = load_config(path, environ={})
        assert config.capture is not None
        assert config.erasure is not None
        assert config.ui is not None
        assert config.targets["Order"].table == "public.orders"
        assert set(config.targets["Customer"].erasable) == {"name"}
