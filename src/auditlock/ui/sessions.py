"""Sessions of the login form: what the signed session cookie holds and when the view stops honouring it.

The cookie (signed by Starlette's `SessionMiddleware`, readable by its holder) carries the viewer's actor id, a
random session id, the time it was issued and the *credential stamp* of the login: a short digest of the user's
argon2 hash in `[ui.users]` (or of the token, with `auth = "token"`). Every request compares that stamp with the
current config's, so a session ends when its user is removed from `[ui.users]` or given a new password hash
(or the token is replaced) — on the next request to a view running the new config. The signer ends it after
`[ui] session_max_age_s` whatever it holds. A logout ends the session at once (`revocations`): its id is
remembered as revoked until it would have expired.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, MutableMapping
from typing import Any

from auditlock.ui.auth import Authenticator, Viewer
from auditlock.ui.revocations import RevokedSessions

VIEWER = "viewer"
SESSION_ID = "sid"
ISSUED_AT = "iat"
STAMP = "cred"


class Sessions:
    """Starts, checks and ends login sessions (the cookie's contents; the signing is the middleware's)."""

    def __init__(self, auth: Authenticator, revoked: RevokedSessions, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.auth = auth
        self.revoked = revoked
        self.clock = clock

    def start(self, session: MutableMapping[str, Any], viewer: Viewer) -> None:
        """A fresh session for `viewer` (anything the cookie held before is dropped)."""
        session.clear()
        session.update({VIEWER: viewer.actor_id, SESSION_ID: secrets.token_hex(16), ISSUED_AT: int(self.clock()),
                        STAMP: self.auth.credential_stamp(viewer.actor_id)})

    def viewer(self, session: MutableMapping[str, Any]) -> Viewer | None:
        """The session's viewer, while its credential is unchanged and no logout ended it; None for no session or
        an ended one."""
        actor_id, stamp = session.get(VIEWER), session.get(STAMP)
        session_id, issued_at = session.get(SESSION_ID), session.get(ISSUED_AT)
        if not (isinstance(actor_id, str) and isinstance(stamp, str) and isinstance(session_id, str)
                and type(issued_at) is int):
            return None
        if self.revoked.is_revoked(session_id, issued_at):
            return None
        current = self.auth.credential_stamp(actor_id)
        if current is None or not secrets.compare_digest(current, stamp):
            return None
        return Viewer(actor_id, self.auth.method)

    def end(self, session: MutableMapping[str, Any]) -> None:
        """Revoke the session (raises `SessionStateError` when the replicas' shared state cannot record it), then
        empty the cookie."""
        session_id, issued_at = session.get(SESSION_ID), session.get(ISSUED_AT)
        if isinstance(session_id, str) and type(issued_at) is int:
            self.revoked.revoke(session_id, issued_at)
        session.clear()
