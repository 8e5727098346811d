"""Which GET requests may be recorded in the viewer's name: only the viewer's own navigations (Fetch Metadata).

A search, an export or an event view is written into the audit trail as the viewer's act. A page on another
site could otherwise make the viewer's browser open such a URL (a link, a redirect, an `<img>`), and the
trail would show searches the viewer never made. Browsers say where a request comes from in `Sec-Fetch-Site`
and what it is for in `Sec-Fetch-Mode`; the view records a request only when

- `Sec-Fetch-Site` is `same-origin` (a link or form of the view itself), `none` (typed into the address bar, a
  bookmark) or absent (scripts with a bearer token, curl, browsers from before 2020–2023), and
- `Sec-Fetch-Mode` is `navigate` or absent (not an image, a script or a fetch).

`same-site` (a sibling host under the same registrable domain) is refused like `cross-site`: the view has no
reason to be reached from a neighbour it does not control. Refused requests get 403 and are not recorded;
the page offers the same URL as a link of the view's own, so following a link on purpose is one click more.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.requests import Request

from auditlock.errors import AuditlockError

ALLOWED_SITES = frozenset({"same-origin", "none"})
ALLOWED_MODES = frozenset({"navigate"})


def own_navigation(headers: Headers) -> bool:
    """Whether the request is the viewer's own navigation (or a client that sends no Fetch Metadata)."""
    site, mode = headers.get("sec-fetch-site"), headers.get("sec-fetch-mode")
    return (site is None or site.lower() in ALLOWED_SITES) and (mode is None or mode.lower() in ALLOWED_MODES)


class NotOwnNavigation(AuditlockError):
    """The request may not be recorded in the viewer's name (the app answers 403: `Views.not_own_navigation`)."""


def require_own_navigation(request: Request) -> None:
    """Raise `NotOwnNavigation` unless the request is the viewer's own navigation."""
    if not own_navigation(request.headers):
        raise NotOwnNavigation
