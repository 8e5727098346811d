"""Reading `[erasure]` and the erasable keys of `[targets.<Type>]` (`erasable`, `subject`): docs/privacy.md.

Checked here, with every problem collected: erasable fields are allowlisted (`fields`) and not hashed (`hmac`);
`subject` is `"<Type>:<field>"`; a target with erasable fields needs a store, and the store its location.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from auditlock.config.model import ErasureConfig, TargetConfig
from auditlock.config.tables import TableReader

_SUBJECT = re.compile(r"[A-Za-z][A-Za-z0-9_]*:[A-Za-z_][A-Za-z0-9_]*\Z")


def read_erasure(reader: TableReader, table: Mapping[str, Any]) -> ErasureConfig:
    """The `[erasure]` section; problems go to `reader.problems`."""
    values = reader._scalars(table, "erasure")
    config = ErasureConfig(**values)
    if config.store == "sql" and (config.dsn_env is None) == (config.dsn_file is None):
        reader.problems.append('[erasure] store = "sql" needs exactly one of dsn_env (an environment variable '
                               'holding the SQLAlchemy URL) or dsn_file')
    if config.store == "file" and config.dir is None:
        reader.problems.append('[erasure] store = "file" needs dir = "PATH": the directory of the key files')
    return config


def check_erasable(targets: Mapping[str, TargetConfig], erasure: ErasureConfig, problems: list[str]) -> None:
    """Cross-checks of the targets' `erasable` and `subject` against their fields and `[erasure]`."""
    for name, target in targets.items():
        where = f"[targets.{name}]"
        for field in sorted(target.erasable - target.fields):
            problems.append(f"{where} erasable field {field!r} is not in fields: add it to fields = [...] "
                            "(erasable fields are allowlisted fields written encrypted)")
        for field in sorted(target.erasable & target.hmac):
            problems.append(f"{where} {field!r} is both hmac and erasable: a hash outlives the erasure of the key "
                            "and still links the value; keep it in one of the two lists")
        if target.subject is not None and not _SUBJECT.match(target.subject):
            problems.append(f'{where} subject = {target.subject!r} must be "<SubjectType>:<field>", e.g. '
                            '"Customer:customer_id" (the field holding the subject\'s id); leave it out when '
                            "the target itself is the data subject")
    erasable = sorted(name for name, target in targets.items() if target.erasable)
    if erasable and not erasure.configured:
        problems.append(f"[targets.{erasable[0]}] erasable fields need a key store: add [erasure] store = \"file\" "
                        "with dir = \"PATH\", or store = \"sql\" with dsn_env = \"VAR\" (docs/privacy.md)")
