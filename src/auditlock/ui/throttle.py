"""Failed logins are limited per account and per client address, so the login form cannot be used to guess
passwords at argon2's pace.

A moving window (the `limits` library, in this process's memory): after `PER_ACCOUNT` failures for one user name
or `PER_ADDRESS` failures from one client address within the window, further attempts are refused with 429 without
checking the password, until old failures leave the window. Refused attempts are recorded like failed ones
(`auth.login_failed`, reason `throttled`). Each replica of the view counts for itself. Bearer-token requests
count under the account `token`, with the login form's token failures (`views.Views.credential_failed`).
"""

from __future__ import annotations

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

PER_ACCOUNT = parse("5/15 minutes")
PER_ADDRESS = parse("30/15 minutes")


class LoginThrottle:
    """Counts failed logins; says whether another attempt may be checked."""

    def __init__(self, per_account: RateLimitItem = PER_ACCOUNT, per_address: RateLimitItem = PER_ADDRESS) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._per_account = per_account
        self._per_address = per_address

    def allows(self, account: str, address: str | None) -> bool:
        """Whether an attempt for `account` from `address` may be checked now."""
        return (self._limiter.test(self._per_account, "account", account)
                and self._limiter.test(self._per_address, "address", address or "unknown"))

    def failed(self, account: str, address: str | None) -> None:
        """Count one failed attempt against the account and the address."""
        self._limiter.hit(self._per_account, "account", account)
        self._limiter.hit(self._per_address, "address", address or "unknown")

    def succeeded(self, account: str) -> None:
        """A successful login forgets the account's failures (the address keeps its count)."""
        self._limiter.clear(self._per_account, "account", account)
