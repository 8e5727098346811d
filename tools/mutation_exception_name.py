"""Define Cosmic Ray's exception name in every Python process of a mutation tree (see docs/mutation-survivors.md).

    TREE/.venv/bin/python tools/mutation_exception_name.py      (tools/mutation.sh and mutation_recount.py run it)

Cosmic Ray's exception-replacer operator writes `except CosmicRayTestingException:` into the module it mutates
but never defines that name where the tests run. Any exception reaching the mutated `except` then raised
`NameError` instead, and the mutant counted as killed although the mutant meant (the handler gone, the exception
passing through) may survive. A `.pth` line in the tree's own virtualenv defines the name as a builtin — an
exception class nothing raises — in pytest, its forked children and every agent or CLI subprocess the tests start.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

HOOK = "auditlock_mutation_exception_name.pth"
LINE = ('import builtins; builtins.CosmicRayTestingException = getattr(builtins, "CosmicRayTestingException", '
        'None) or type("CosmicRayTestingException", (Exception,), {})\n')


def install(site_packages: Path | None = None) -> Path:
    """Write the `.pth` line into `site_packages` (default: this interpreter's); idempotent."""
    target = (site_packages or Path(sysconfig.get_paths()["purelib"])) / HOOK
    target.write_text(LINE)
    return target


if __name__ == "__main__":
    print(install())
