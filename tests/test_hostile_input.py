"""Hostile input at the config, the event boundary and the validators (issue #15 items 12, 14, 15)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from auditlock import ConfigError, EventError
from auditlock.bucket.checks import check_bucket_name
from auditlock.cli import main
from auditlock.config import Config, build_config
from auditlock.errors import ProvisionError
from auditlock.handler.core import AuditCore
from auditlock.handler.event_types import register_standard_fields
from auditlock.query.paging import Cursor, event_time_range
from auditlock.spool.format import parse_segment_name
from auditlock.verify.objects import class_of
from auditlock.verify.source import relative_key
from tests.conftest import config_dict
from tests.support.spool_files import spool_lines

HOSTILE_CLASS_NAMES = ["pci/dss", "std?", "../../evil", "Standard", "-std", "std\n", "a" * 64, "std*", "s d"]
MAX_DEPTH = 32  # the documented bound (docs/events.md, "Value encoding")
EVENT_ID = "0190a5f4-1c2b-7d3e-8f40-123456789abc"


@pytest.fixture
def core(config: Config, closing: Callable[[Any], Any]) -> AuditCore:
    """A core writing to the test spool."""
    core = AuditCore(config)
    closing(core.writer)
    return core


def problems_of(doc: dict[str, Any]) -> list[str]:
    """The problems a ConfigError lists for a document."""
    with pytest.raises(ConfigError) as info:
        build_config(doc)
    return info.value.problems


def nested(depth: int) -> list[Any]:
    """A list holding a list … `depth` lists deep in all (the innermost one empty)."""
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


class TestRetentionClassNames:
    @pytest.mark.parametrize("name", HOSTILE_CLASS_NAMES)
    def test_a_class_name_keys_and_tags_cannot_hold_is_refused(self, spool_dir: Path, name: str) -> None:
        """A class name with '/', a glob character, '..', capitals, a newline or over 63 characters is refused."""
        doc = config_dict(spool_dir)
        doc["retention"]["classes"][name] = {"days": 30}
        problems = problems_of(doc)
        assert len(problems) == 1
        assert f"[retention.classes]: {name!r} is not a valid retention class name" in problems[0]
        assert "lowercase letters, digits, '_' and '-'" in problems[0]

    def test_check_config_lists_every_bad_name(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """`auditlock check-config` exits 1 and names each bad class, not only the first."""
        file = tmp_path / "auditlock.toml"
        file.write_text('service = "s"\n[spool]\ndir = "spool"\n[events]\ninclude = ["order.*"]\n'
                        '[retention]\ndefault = "standard"\n[retention.classes.standard]\ndays = 1\n'
                        '[retention.classes."pci/dss"]\ndays = 1\n[retention.classes."std?"]\ndays = 1\n'
                        '[retention.classes."../../evil"]\ndays = 1\n')
        assert main(["check-config", str(file)]) == 1
        out = capsys.readouterr().out
        for name in ("pci/dss", "std?", "../../evil"):
            assert f"{name!r} is not a valid retention class name" in out

    @pytest.mark.parametrize("where", ["default", "events", "target"])
    def test_a_reference_to_a_bad_name_is_refused(self, spool_dir: Path, where: str) -> None:
        """`[retention] default`, `[retention.events]` values and a target's retention are checked too."""
        doc = config_dict(spool_dir)
        if where == "default":
            doc["retention"]["default"], key = "../../evil", "retention.default"
        elif where == "events":
            doc["retention"]["events"] = {"auth.*": "../../evil"}
            key = 'retention.events."auth.*"'
        else:
            doc["targets"]["Order"]["retention"], key = "../../evil", "targets.Order.retention"
        assert problems_of(doc) == [f"{key}: '../../evil' is not a valid retention class name (1 to 63 lowercase "
                                    "letters, digits, '_' and '-', starting with a letter or digit, e.g. "
                                    "\"standard\" or \"pci-dss\"): it becomes part of object keys, tags and "
                                    "lifecycle rule IDs"]

    def test_names_with_digits_dashes_and_underscores_are_accepted(self, spool_dir: Path) -> None:
        """`pci-dss`, `hot_30d`, `7y` and a 63-character name are valid class names."""
        doc = config_dict(spool_dir)
        for name in ("pci-dss", "hot_30d", "7y", "a" * 63):
            doc["retention"]["classes"][name] = {"days": 30}
        assert set(build_config(doc).retention.classes) >= {"pci-dss", "hot_30d", "7y", "a" * 63}


class TestDeepPayloads:
    def test_a_self_referencing_dict_is_an_event_error(self, core: AuditCore, config: Config) -> None:
        """A dict that holds itself is refused with EventError naming the field and the bound; nothing written."""
        loop: dict[str, Any] = {}
        loop["self"] = loop
        with pytest.raises(EventError, match=rf"payload field payload\.total(\.self)+ is nested more than "
                                             rf"{MAX_DEPTH} levels deep \(or holds itself\)"):
            core.emit("order.updated", {"actor_id": "user:1", "target_type": "Order", "total": loop})
        assert not config.spool.dir.exists() or spool_lines(config.spool.dir) == []

    def test_a_self_referencing_list_in_changes_is_an_event_error(self, core: AuditCore) -> None:
        """A list that holds itself in after= is refused with EventError, not RecursionError."""
        loop: list[Any] = []
        loop.append(loop)
        with pytest.raises(EventError, match=r"payload field payload\.changes\.status(\[0\])+ is nested more"):
            core.emit("order.updated", {"actor_id": "user:1", "target_type": "Order", "after": {"status": loop}})

    def test_a_value_nested_a_thousand_deep_is_an_event_error(self, core: AuditCore) -> None:
        """A list nested 1000 deep (which readers could not parse) is refused by the writer."""
        with pytest.raises(EventError, match=f"nested more than {MAX_DEPTH} levels"):
            core.emit("order.updated", {"actor_id": "user:1", "target_type": "Order", "total": nested(1000)})

    def test_the_bound_itself_is_accepted(self, core: AuditCore) -> None:
        """A value nested exactly MAX_DEPTH levels is written; one more level is refused."""
        record = core.emit("order.updated", {"actor_id": "user:1", "target_type": "Order",
                                             "total": nested(MAX_DEPTH)})
        assert record is not None
        assert record["payload"]["total"] == nested(MAX_DEPTH)
        with pytest.raises(EventError, match=f"nested more than {MAX_DEPTH} levels"):
            core.emit("order.updated", {"actor_id": "user:1", "target_type": "Order",
                                        "total": nested(MAX_DEPTH + 1)})

    def test_two_self_referencing_values_in_before_and_after_are_an_event_error(self, core: AuditCore) -> None:
        """before= and after= each holding a different self-referencing list: EventError, not RecursionError."""
        old: list[Any] = []
        old.append(old)
        new: list[Any] = []
        new.append(new)
        with pytest.raises(EventError, match=r"payload field payload\.changes\.status(\[0\])+ is nested more"):
            core.emit("order.updated", {"actor_id": "user:1", "target_type": "Order",
                                        "before": {"status": old}, "after": {"status": new}})

    def test_two_very_deep_values_in_before_and_after_are_an_event_error(self, core: AuditCore) -> None:
        """before= and after= each nested 100000 deep: EventError naming the bound, not RecursionError."""
        with pytest.raises(EventError, match=f"nested more than {MAX_DEPTH} levels"):
            core.emit("order.updated", {"actor_id": "user:1", "target_type": "Order",
                                        "before": {"status": nested(100_000)}, "after": {"status": nested(100_000)}})


class TestTrailingNewline:
    def test_an_event_type_with_a_trailing_newline_is_refused(self, core: AuditCore) -> None:
        """`order.updated\\n` is not a valid event type."""
        with pytest.raises(EventError, match="is not namespaced lowercase"):
            core.emit("order.updated\n", {"actor_id": "user:1"})

    def test_registering_fields_for_a_type_with_a_newline_is_refused(self) -> None:
        """register_standard_fields refuses `order.exported\\n`."""
        with pytest.raises(ValueError, match="use lowercase dotted names"):
            register_standard_fields("order.exported\n", ["rows"])

    def test_query_type_with_a_newline_is_a_usage_error(self, capsys: pytest.CaptureFixture[str]) -> None:
        """`auditlock query --type 'order.*\\n'` exits 2 naming --type."""
        assert main(["query", "--type", "order.*\n"]) == 2
        assert "--type" in capsys.readouterr().err

    def test_query_hmac_field_with_a_newline_is_a_usage_error(self, capsys: pytest.CaptureFixture[str]) -> None:
        """`auditlock query --hmac-field 'email\\n=x'` exits 2 naming --hmac-field."""
        assert main(["query", "--hmac-field", "email\n=x"]) == 2
        assert "--hmac-field" in capsys.readouterr().err

    def test_athena_name_with_a_newline_is_refused(self, capsys: pytest.CaptureFixture[str]) -> None:
        """`auditlock athena-ddl --database 'audit\\n'` is a usage error."""
        with pytest.raises(SystemExit) as info:
            main(["athena-ddl", "--database", "audit\n"])
        assert info.value.code == 2
        assert "is not an Athena name" in capsys.readouterr().err

    def test_bucket_name_with_a_newline_is_refused(self) -> None:
        """`provision` refuses the bucket name `audit-bucket\\n`."""
        with pytest.raises(ProvisionError, match="bucket name 'audit-bucket\\\\n'"):
            check_bucket_name("audit-bucket\n")

    def test_ui_user_name_with_a_newline_is_refused(self, spool_dir: Path) -> None:
        """A `[ui.users]` name with a trailing newline is a config problem."""
        doc = config_dict(spool_dir, ui={"users": {"alice\n": "$argon2id$v=19$m=65536,t=3,p=4$x$y"}})
        assert problems_of(doc) == ["[ui.users] 'alice\\n': a user name is letters, digits and _ . @ - only"]

    def test_segment_name_with_a_newline_is_not_a_segment(self) -> None:
        """A spool file named like a segment plus a newline is not read as one."""
        name = f"{uuid.uuid4().hex}.{0:016x}.jsonl"
        assert parse_segment_name(name) is not None
        assert parse_segment_name(name + "\n") is None

    def test_event_id_and_page_position_with_a_newline_are_refused(self) -> None:
        """An event id or a page cursor with a trailing newline is malformed (the view's /event/ and paging)."""
        event_time_range(EVENT_ID)
        Cursor.parse(f"2026-01-02T03:04:05.000006Z_{EVENT_ID}")
        with pytest.raises(ValueError, match="is not an auditlock event id"):
            event_time_range(EVENT_ID + "\n")
        with pytest.raises(ValueError, match="is not a page position"):
            Cursor.parse(f"2026-01-02T03:04:05.000006Z_{EVENT_ID}\n")
        with pytest.raises(ValueError, match="is not a page position"):
            Cursor.parse(f"2026-01-02T03:04:05.000006Z\n_{EVENT_ID}")

    def test_archive_key_with_a_newline_keeps_it(self) -> None:
        """verify reads a key ending in a newline as that exact key, and finds no class in its name."""
        key = f"audit/events/year=2026/month=01/20260102T030405Z-standard-{'0' * 32}.jsonl.gz\n"
        assert relative_key(key) == key.removeprefix("audit/")
        assert class_of(key, []) is None




class TestEveryPatternMatchesTheWholeString:
    def test_no_validation_pattern_ends_in_a_bare_dollar(self) -> None:
        """No compiled pattern under src/ ends in `$`, which also matches before a trailing newline (use `\\Z`)."""
        source = Path(__file__).parent.parent / "src" / "auditlock"
        offenders = [f"{path.relative_to(source)}:{number}"
                     for path in sorted(source.rglob("*.py"))
                     for number, line in enumerate(path.read_text().splitlines(), 1)
                     if re.search(r"""re\.compile\(r?["'][^"']*\$["']""", line)]
        assert offenders == []
