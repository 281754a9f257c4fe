"""Staff accounts for the web admin: hashed passwords (werkzeug's scrypt), nothing stored in clear.

A login costs the same whether or not the user name exists (a dummy hash is checked
when it does not), so timing does not tell which staff accounts there are.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence

from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from newsletter.clock import Clock
from newsletter.errors import UsageError, ValidationError
from newsletter.store.models import StaffUser
from newsletter.store.readers import (
    count_staff_users,
    delete_staff_user,
    set_staff_password_hash,
    staff_user_named,
    staff_users,
)

MIN_PASSWORD = 12
MAX_PASSWORD = 1024
MAX_USERNAME = 100


def check_username(username: str) -> str:
    name = username.strip()
    if not name or len(name) > MAX_USERNAME or any(c.isspace() or not c.isprintable() for c in name):
        raise ValidationError("user name", f"1 to {MAX_USERNAME} printable characters without spaces", reason="invalid")
    return name


def check_password(password: str) -> str:
    if any("\ud800" <= c <= "\udfff" for c in password):
        raise ValidationError("password", "not valid text (bytes that are not UTF-8)", reason="encoding")
    if len(password) < MIN_PASSWORD:
        raise ValidationError("password", f"too short; use at least {MIN_PASSWORD} characters", reason="too-short")
    if len(password) > MAX_PASSWORD:
        raise ValidationError("password", f"too long; at most {MAX_PASSWORD} characters", reason="too-long")
    return password


def add_staff_user(session: Session, username: str, password: str, clock: Clock, *, replace: bool = False) -> bool:
    """Create a staff user, or with ``replace`` set a new password; True if created."""
    name = check_username(username)
    hashed = generate_password_hash(check_password(password))
    user = staff_user_named(session, name)
    if user is not None:
        if not replace:
            raise UsageError(f"staff user {name!r} already exists; pass --replace to set a new password")
        user.password_hash = hashed
        return False
    session.add(StaffUser(username=name, password_hash=hashed, created_at=clock.now()))
    return True


class UnknownStaffError(UsageError):
    """Raised when a staff account named by a command does not exist."""

    def __init__(self, username: str) -> None:
        self.username = username
        super().__init__(f"there is no staff user {username!r}; `newsletter staff list` shows them")


def staff_accounts(session: Session) -> Sequence[StaffUser]:
    """Every staff account, by name, for `staff list`."""
    return staff_users(session)


def require_staff_user(session: Session, username: str) -> StaffUser:
    """The staff user, or ``UnknownStaffError``; checked before asking for a new password."""
    name = check_username(username)
    user = staff_user_named(session, name)
    if user is None:
        raise UnknownStaffError(name)
    return user


def set_staff_password(session: Session, username: str, password: str) -> None:
    """Give a staff user a new password; every admin session opened with the old one ends.

    The session stamp is derived from the stored hash, and a new hash (new salt) never
    matches the old stamp, even for the same password.
    """
    name = check_username(username)
    if not set_staff_password_hash(session, name, generate_password_hash(check_password(password))):
        raise UnknownStaffError(name)


def remove_staff_user(session: Session, username: str) -> int:
    """Delete a staff account, which ends its admin sessions; returns how many accounts are left.

    The admin loads the user of every request's session by id, so a session whose user
    row is gone is logged out on its next request.
    """
    name = check_username(username)
    if not delete_staff_user(session, name):
        raise UnknownStaffError(name)
    return count_staff_users(session)


@functools.cache
def _dummy_hash() -> str:
    return generate_password_hash("not a real password, only here to spend the same time")


def authenticate(session: Session, username: str, password: str, clock: Clock) -> StaffUser | None:
    """The staff user if the password is right (and the login time recorded), else None."""
    try:
        name = check_username(username)
    except ValidationError:
        name = ""  # still hash below: a malformed name must not answer faster than a wrong one
    user = staff_user_named(session, name) if name else None
    if len(password) > MAX_PASSWORD:
        return None
    if user is None:
        check_password_hash(_dummy_hash(), password)
        return None
    if not check_password_hash(user.password_hash, password):
        return None
    user.last_login_at = clock.now()
    return user


def session_stamp(user: StaffUser) -> str:
    """Stored in the login session; a new password changes it, which ends every older session."""
    return hashlib.sha256(user.password_hash.encode()).hexdigest()[:16]
