"""Who may reach the unix socket: the file system's part of local access control.

labd's own uid (and root) always may. ``--allow-group`` and ``--allow-uid`` name others;
for them the socket's directory and the socket are opened just enough, and nothing
more, so the kernel lets them connect, and the authenticator
(:class:`labd.server.PeerCredAuthenticator`) then admits them by their credentials:

* nobody else: directory 0700, socket 0600;
* the first allowed group owns both: directory 0750, socket 0660;
* further groups and every allowed uid get POSIX ACL entries (search on the directory,
  read-write on the socket); a file system without ACLs is refused with a clear error.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from labd.errors import ConfigError

_XATTR = "system.posix_acl_access"
_VERSION = 2
_UNDEFINED = 0xFFFFFFFF
_USER_OBJ, _USER, _GROUP_OBJ, _GROUP, _MASK, _OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
_ENTRY = struct.Struct("<HHI")


_MAX_ID = 0xFFFFFFFE  # (uid_t) -1 means "none" to the kernel


def _id_of(text: str, what: str, lookup: Callable[[str], int]) -> int:
    if text.isascii() and text.isdecimal():
        value = int(text)
        if value > _MAX_ID:
            raise ValueError(f"{what} {text} is out of range (0 to {_MAX_ID})")
        return value
    try:
        return lookup(text)
    except KeyError:
        kind = "user" if what == "uid" else "group"
        raise ValueError(f"no {kind} named {text!r}") from None


def uid_of(text: str) -> int:
    """A user name or a numeric uid, as ``--allow-uid`` takes it."""
    return _id_of(text, "uid", lambda name: pwd.getpwnam(name).pw_uid)


def gid_of(text: str) -> int:
    """A group name or a numeric gid, as ``--allow-group`` takes it."""
    return _id_of(text, "gid", lambda name: grp.getgrnam(name).gr_gid)


@dataclass(frozen=True)
class SocketAccess:
    """The uids and gids admitted besides labd's own uid and root."""

    uids: tuple[int, ...] = ()
    gids: tuple[int, ...] = ()

    @classmethod
    def of(cls, uids: Iterable[int] = (), gids: Iterable[int] = ()) -> SocketAccess:
        own = {os.getuid(), 0}
        # order kept: the first group named owns the socket; duplicates dropped
        return cls(
            tuple(dict.fromkeys(u for u in uids if u not in own)), tuple(dict.fromkeys(gids))
        )

    @property
    def private(self) -> bool:
        return not self.uids and not self.gids

    def open_directory(self, path: Path) -> None:
        """Let the allowed ones search the socket's directory (0700 if nobody)."""
        self._apply(path, 0o750 if self.gids else 0o700, search_only=True)

    def open_socket(self, path: Path) -> None:
        """Let the allowed ones connect to the socket (0600 if nobody)."""
        self._apply(path, 0o660 if self.gids else 0o600, search_only=False)

    def _apply(self, path: Path, mode: int, *, search_only: bool) -> None:
        if self.gids and os.stat(path).st_gid != self.gids[0]:  # systemd made it so
            try:
                os.chown(path, -1, self.gids[0])
            except OSError as exc:
                raise ConfigError(
                    f"cannot give {path} to group {self.gids[0]}: {exc.strerror} (labd must "
                    "run as root or as a member of that group)"
                ) from None
        os.chmod(path, mode)
        if self.uids or len(self.gids) > 1:
            self._acl(path, mode, 0o1 if search_only else 0o6)
        else:  # an ACL left by an earlier, more open run must not linger
            try:
                os.removexattr(path, _XATTR)
            except OSError as exc:
                if exc.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise

    def _acl(self, path: Path, mode: int, perm: int) -> None:
        group_perm = (mode >> 3) & 0o7
        entries = [(_USER_OBJ, (mode >> 6) & 0o7, _UNDEFINED)]
        entries += [(_USER, perm, uid) for uid in sorted(self.uids)]  # the kernel wants
        entries.append((_GROUP_OBJ, group_perm, _UNDEFINED))  # them by tag, then id
        entries += [(_GROUP, perm, gid) for gid in sorted(set(self.gids[1:]))]
        entries += [(_MASK, group_perm | perm, _UNDEFINED), (_OTHER, 0, _UNDEFINED)]
        data = struct.pack("<I", _VERSION) + b"".join(_ENTRY.pack(*e) for e in entries)
        try:
            os.setxattr(path, _XATTR, data)
        except OSError as exc:
            if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
                raise ConfigError(
                    f"the file system of {path} has no POSIX ACLs, which --allow-uid needs: "
                    "put the socket elsewhere (--socket) or admit a group (--allow-group)"
                ) from None
            raise ConfigError(f"cannot set the ACL of {path}: {exc.strerror}") from None


#: labd's own uid and root only
PRIVATE = SocketAccess()
