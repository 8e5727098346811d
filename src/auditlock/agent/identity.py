"""Two identities (issue #16): the agent and the applications that write its spool run as different users.

The spool's permission model (`spool.format`, "Two identities") lets a writer create and seal its own segments and
the agent read, rename and delete them, while the agent's own directories stay the agent's alone. That holds only
if the agent's user is not a writer's: an application running as the agent's user can rewrite sealed, unshipped
segments and the agent's state (ledger, digest chain, witness) to match, and nothing notices. The agent cannot
refuse that setup (a laptop, the demo, an old deployment), so it says so:

- `IdentityCheck` looks at who owns the spool's writer files (segments in every state, drop files). When every one
  belongs to the agent's own user it logs one WARNING naming what is given up and the fix (docs/operations.md,
  "Two identities") and sets `auditlock_agent_shares_writer_uid` to 1. It checks at start and then at the start
  of every shipping pass until some writer file exists (an agent that starts first sees an empty spool), then
  stops. Its own trail's segments are the agent user's too: the check counts them, so a spool holding nothing but
  those (after a crash) warns wrongly; a spool that holds any application's file does not.
- `ensure_private_dir` creates the agent's own directories 0700, refuses one another user owns (planted before
  the agent created it) and narrows one a volume's fsGroup widened.
- `refuse_foreign_sticky_spool`: a sticky spool directory that is not the agent's would keep the agent from
  deleting shipped segments; the agent refuses to start on it rather than fail at every delete.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge

from auditlock.errors import SpoolError
from auditlock.spool.format import DIR_MODE, DROPS_DIR, NEW_SUFFIX, RECOVERING_SUFFIX, parse_segment_name

log = logging.getLogger("auditlock.agent")

FIX = "docs/operations.md, \"Two identities\""
MAX_FILES_LOOKED_AT = 10_000  # the check reads owners only, but a spool holding millions of files is bounded too


class IdentityCheck:
    """Warns once if the spool's writers run as the agent's user (see the module docstring)."""

    def __init__(self, spool: Path, registry: CollectorRegistry, uid: int | None = None) -> None:
        self.spool = spool
        self.uid = os.geteuid() if uid is None else uid
        self.done = False
        self.shares_writer_uid = False
        self.gauge = Gauge("auditlock_agent_shares_writer_uid", "1 if every writer file of the spool belongs to the "
                           "agent's own user (one identity: the application could rewrite unshipped history)",
                           registry=registry)
        self.check()  # at start, before anything ships: afterwards the spool may be empty again

    def check(self) -> None:
        """Look at the writer files' owners until there are some; warn once if they are all the agent's user."""
        if self.done:
            return
        owners = writer_uids(self.spool)
        if not owners:
            return  # no writer has written yet: look again at the next refresh
        self.done = True
        if owners == {self.uid}:
            self.shares_writer_uid = True
            self.gauge.set(1)
            log.warning(same_identity_warning(self.spool, self.uid))


def same_identity_warning(spool: Path, uid: int) -> str:
    """The warning: what running as the writers' user gives up, and the fix."""
    return (f"auditlock agent: the applications writing spool {spool} run as this agent's own user (uid {uid}). "
            "They can therefore rewrite sealed, not yet shipped segments and the agent's own state (its ledger, "
            "digest chain and witness) to match, and nothing would notice. Run the agent as a user of its own that "
            f"shares only the spool's group with the applications ({FIX})")


def writer_uids(spool: Path) -> set[int]:
    """The users owning the spool's writer files: segments (open, sealed, being created) and drop files."""
    owners: set[int] = set()
    for directory, is_writer_file in ((spool, _is_segment_file), (spool / DROPS_DIR, _is_drop_file)):
        try:
            with os.scandir(directory) as entries:
                for n, entry in enumerate(entries):
                    if n >= MAX_FILES_LOOKED_AT:
                        break
                    if is_writer_file(entry.name):
                        owners.update(_owner(entry))
        except (FileNotFoundError, NotADirectoryError):
            continue
    return owners


def _owner(entry: os.DirEntry[str]) -> set[int]:
    try:
        return {entry.stat(follow_symlinks=False).st_uid}
    except FileNotFoundError:
        return set()  # shipped or sealed since it was listed


def _is_segment_file(name: str) -> bool:
    if name.endswith(RECOVERING_SUFFIX):
        return False  # the agent's own copy
    return parse_segment_name(name.removesuffix(NEW_SUFFIX)) is not None


def _is_drop_file(name: str) -> bool:
    return name.endswith(".json")


def ensure_private_dir(path: Path, what: str) -> Path:
    """Create `path` 0700 if it is missing; refuse one that is not a directory or not this user's; narrow one that
    the group or others may use (a volume's fsGroup adds group bits) back to 0700. Returns `path`."""
    created = _make_dir(path)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):  # a symlink planted there would take the agent's files elsewhere
        raise SpoolError(f"{path} is not a directory (a symbolic link?); remove it so the agent can create {what}")
    if st.st_uid != os.geteuid():
        raise SpoolError(f"{path} belongs to uid {st.st_uid}, not to the agent's user (uid {os.geteuid()}): another "
                         f"user created it, and could change what the agent keeps there. Move it away so the agent "
                         f"can create {what} ({FIX})")
    if created:
        os.chmod(path, DIR_MODE)  # exactly: not the setgid bit a directory inherits in the spool
    elif st.st_mode & 0o077:
        os.chmod(path, DIR_MODE)
        log.warning("auditlock agent: %s was mode %04o; narrowed to %04o (%s is the agent's alone)", path,
                    stat.S_IMODE(st.st_mode), DIR_MODE, what)
    return path


def _make_dir(path: Path) -> bool:
    try:
        path.mkdir(mode=DIR_MODE, parents=True)
    except FileExistsError:
        return False
    return True


def refuse_foreign_sticky_spool(spool: Path) -> None:
    """Raise `SpoolError` if the spool directory is sticky but not the agent's: the agent could then not delete or
    seal the segments other users wrote."""
    st = os.stat(spool)
    if st.st_mode & stat.S_ISVTX and st.st_uid != os.geteuid():
        raise SpoolError(f"spool directory {spool} has the sticky bit but belongs to uid {st.st_uid}, not to the "
                         f"agent's user (uid {os.geteuid()}): the agent could not delete shipped segments or seal a "
                         f"dead writer's. Run `chown {os.geteuid()} {spool}` ({FIX})")
