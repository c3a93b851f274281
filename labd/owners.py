"""Who calls, and what they may do on a shared lab host.

Every set records its *owner*: the local user who spawned it (the peer's uid on the unix
socket, shown by name) or, over TLS, the subject of the client's certificate
(``CN=ipclab client,O=ipclab``). Anyone admitted may look (status, inspect, tail); only
the owner or an *admin* may stop a set, and only an admin may shut labd down. Admins:
root, labd's own user, members of ``--admin-group``, and TLS clients whose certificate's
subject is an ``--admin-subject`` (a TLS client has no uid). A plain TCP client on
loopback (no TLS, labd warns) is the local user the kernel lists as its socket's owner
(:mod:`labd.server.tcpowner`).

The authenticators (:mod:`labd.server.auth`) hand over the peer's credentials; the
service turns them into a :class:`Caller` per connection (:func:`caller_of`).
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from labd.errors import LimitError, NotAllowed


def user_name(uid: int) -> str:
    """A local user's name, or ``uid N`` for a uid without one."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


@dataclass(frozen=True)
class Caller:
    """One connection's user: the owner name its sets get, and whether it is an admin."""

    owner: str
    admin: bool = False
    uid: int | None = None

    def may_stop(self, owner: str | None) -> bool:
        return self.admin or (owner is not None and owner == self.owner)

    def check_stop(self, set_id: int, owner: str | None) -> None:
        if not self.may_stop(owner):
            whose = f"belongs to {owner}" if owner else "has no recorded owner"
            raise NotAllowed(
                f"set {set_id} {whose}: only its owner or an admin may stop it "
                f"(you are {self.owner}; admins: root, labd's user, --admin-group, "
                "--admin-subject)"
            )

    def check_admin(self, what: str) -> None:
        if not self.admin:
            raise NotAllowed(
                f"only an admin may {what} (you are {self.owner}; admins: root, "
                "labd's own user, members of labd --admin-group, TLS clients of an "
                "--admin-subject)"
            )


@dataclass(frozen=True)
class Admins:
    """Who besides root and labd's own user is an admin: members of these groups, and
    TLS clients whose certificate has one of these subjects (``CN=...,O=...``)."""

    gids: frozenset[int] = field(default_factory=frozenset)
    subjects: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def of(cls, gids: Iterable[int] = (), subjects: Iterable[str] = ()) -> Admins:
        return cls(frozenset(gids), frozenset(subjects))

    def is_admin(self, uid: int, groups: Iterable[int]) -> bool:
        return uid in (0, os.getuid()) or bool(self.gids & set(groups))


#: labd itself (signals, a set's duration, shutdown): may do anything
LABD = Caller(owner=user_name(os.getuid()), admin=True, uid=os.getuid())


def caller_of(credentials: Mapping[str, object] | None, admins: Admins) -> Caller:
    """The caller of a connection, from its authenticator's credentials."""
    if not credentials:  # an in-process caller
        return LABD
    uid = credentials.get("uid")
    if type(uid) is int:
        groups = credentials.get("groups") or ()
        gid = credentials.get("gid")
        known = {int(g) for g in (*groups, gid) if type(g) is int}  # type: ignore[misc]
        return Caller(user_name(uid), admins.is_admin(uid, known), uid)
    subject = credentials.get("owner")  # a TLS certificate's subject
    if not subject:
        return Caller("(unknown client)")
    return Caller(str(subject), admin=credentials.get("tls") is True and subject in admins.subjects)


class Quota(Protocol):
    """The limits :func:`check_quota` applies (labd.lab.Limits)."""

    @property
    def total(self) -> int: ...
    @property
    def per_user(self) -> int | None: ...


def check_quota(
    owner: str | None, need: int, live: Iterable[tuple[str | None, int]], limits: Quota
) -> None:
    """Refuse a set of ``need`` processes that would take labd above ``limits.total``,
    or its owner above ``limits.per_user`` (``live``: (owner, processes) of each live
    set). A set's processes are its counters, printers and launchers (labd.launch)."""
    total, per_user = limits.total, limits.per_user
    sets = list(live)
    running = sum(n for _, n in sets)
    if running + need > total:
        raise LimitError(
            f"this set would bring labd to {running + need} processes (counters, printers "
            f"and their launchers), above the limit of {total} (stop some: labctl stop)"
        )
    if per_user is None:
        return
    theirs = sum(n for who, n in sets if who == owner)
    if theirs + need > per_user:
        raise LimitError(
            f"this set would bring {owner}'s sets to {theirs + need} processes (counters, "
            f"printers and their launchers), above the limit of {per_user} per user "
            "(labd --max-per-user; stop some: labctl stop)"
        )
