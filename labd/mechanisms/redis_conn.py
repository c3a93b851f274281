"""What the Redis mechanisms share: where the server is, how to log in, and whose keys.

The ``redis`` client package is the optional extra ``ipclab[redis]``: it is imported
only when a set uses Redis (in the daemon at spawn, in the workers at start), so labd
without it still lists these mechanisms and says what to install when one is used.

Secrets never travel in parameters: ``url=`` may not carry a password (it would show
in status and the history); ``password_file=`` names a file on labd's host that holds
it, read when a set starts, and the workers get it as an argument of their start.

Each set owns a key namespace (``namespace=``, by default one of its own): an
``owner`` key claims it, and a set refuses a namespace another set or user claimed.
A group's parts (``group=GID:PART/N``, written by ``labctl spawn ... --on``) share
one namespace; the last part to end reads the final figures and removes every key.

Every key a set writes expires ``key_ttl=`` seconds (30 by default) after it was last
renewed, and a live set renews them every third of that (see :mod:`redis_keeper`): the
keys of a set whose labd or host died vanish on their own; an orderly end removes them
at once.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import socket
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from labd.errors import LabError, ParamError
from labd.params import Param

CONNECT_TIMEOUT_S = 3.0
MIN_SERVER_MAJOR = 6  # SET ... KEEPTTL
KEY_TTL_S = 30.0  # default key_ttl=: a live set renews its keys every third of it
EXTRA_HINT = "install the extra: pip install 'ipclab[redis]'"
_SCHEMES = ("redis", "rediss", "unix")
_GROUP = re.compile(r"^(g[0-9a-z]{1,32}):([1-9][0-9]{0,3})/([1-9][0-9]{0,3})$")

PARAMS: tuple[Param, ...] = (
    Param(
        "url",
        str,
        "redis://localhost:6379/0",
        "the server: redis://HOST:PORT/DB, rediss://HOST:PORT/DB (TLS) or unix:///PATH?db=N",
    ),
    Param("username", str, "", "ACL user name (empty: the default user)"),
    Param(
        "password_file",
        str,
        None,
        "file on labd's host holding the password (never in url=)",
        nullable=True,
    ),
    Param("tls_ca", str, None, "CA file to verify a rediss:// server", nullable=True),
    Param("tls_cert", str, None, "client certificate file for rediss://", nullable=True),
    Param("tls_key", str, None, "client key file for rediss://", nullable=True),
    Param(
        "namespace",
        str,
        "",
        "key prefix this set owns (empty: ipclab:HOST:SET:TOKEN, or the group's)",
    ),
    Param(
        "key_ttl",
        float,
        KEY_TTL_S,
        "seconds the set's keys outlive it if its labd or host dies (renewed every third "
        "of it while it runs; an orderly end removes them at once)",
        min=0.3,
        max=86400.0,
    ),
)
GROUP_PARAM = Param(
    "group",
    str,
    "",
    "GID:PART/N: this set is part PART of N of the group GID (set by spawn --on)",
)


def redis_module() -> Any:
    """The ``redis`` package, or a one-line error saying how to get it."""
    try:
        import redis
    except ImportError:
        raise LabError(f"the Redis mechanisms need the redis package: {EXTRA_HINT}") from None
    return redis


@dataclass(frozen=True)
class Group:
    gid: str
    part: int
    parts: int


def parse_group(text: str) -> Group | None:
    if not text:
        return None
    m = _GROUP.match(text)
    if m is None or int(m.group(2)) > int(m.group(3)):
        raise ParamError(f"group={text!r} is not GID:PART/N (e.g. g1a2b3:1/2)")
    return Group(m.group(1), int(m.group(2)), int(m.group(3)))


def check_values(values: Mapping[str, Any]) -> None:
    """Refuse what can never work, before anything starts (no connection made)."""
    url = str(values["url"])
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES:
        raise ParamError(f"url={url!r}: use redis://HOST:PORT/DB, rediss://... or unix:///PATH")
    if parts.password is not None:
        raise ParamError(
            "url= must not carry a password (it would show in status and the history): "
            "put it in a file on labd's host and give password_file=PATH"
        )
    tls = [k for k in ("tls_ca", "tls_cert", "tls_key") if values.get(k)]
    if tls and parts.scheme != "rediss":
        raise ParamError(f"{tls[0]}= applies to rediss:// urls only")
    if bool(values.get("tls_cert")) != bool(values.get("tls_key")):
        raise ParamError("tls_cert= and tls_key= go together")
    namespace = str(values.get("namespace") or "")
    if namespace and not re.fullmatch(r"[A-Za-z0-9_.:{}-]{1,100}", namespace):
        raise ParamError(f"namespace={namespace!r}: use letters, digits and _ . : - (at most 100)")
    parse_group(str(values.get("group") or ""))


@contextlib.contextmanager
def server_lost(role: str, index: int, url: str) -> Iterator[None]:
    """In a worker: the server going away ends it with one line on stderr (labd's log)
    and exit code 1 (the set degrades), not a traceback."""
    redis = redis_module()
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        sys.stderr.write(f"{role} {index}: lost the Redis server at {url}: {reason}\n")
        sys.exit(1)


def read_password(values: Mapping[str, Any]) -> str | None:
    path = values.get("password_file")
    if not path:
        return None
    try:
        return Path(str(path)).read_text().strip("\r\n")
    except OSError as exc:
        raise LabError(f"cannot read password_file={path}: {exc.strerror or exc}") from None


def where(values: Mapping[str, Any]) -> str:
    """The server's address as it may be shown (url= never holds a secret)."""
    return str(values["url"])


def connect_kwargs(values: Mapping[str, Any], password: str | None) -> dict[str, Any]:
    """Keyword arguments of ``redis.Redis.from_url`` (picklable, for the workers)."""
    kw: dict[str, Any] = {"socket_connect_timeout": CONNECT_TIMEOUT_S}
    if password is not None:
        kw["password"] = password
    if values.get("username"):
        kw["username"] = str(values["username"])
    if urlsplit(str(values["url"])).scheme == "rediss":
        kw["ssl_ca_certs"] = values.get("tls_ca") or None
        kw["ssl_certfile"] = values.get("tls_cert") or None
        kw["ssl_keyfile"] = values.get("tls_key") or None
    return kw


def open_client(url: str, kwargs: Mapping[str, Any]) -> Any:
    """A client connected to the server (in a worker, or in labd)."""
    return redis_module().Redis.from_url(url, **kwargs)


def connect_checked(values: Mapping[str, Any]) -> Any:
    """A client that answered PING, or a one-line error naming the server and the fix."""
    redis = redis_module()
    password = read_password(values)
    client = open_client(where(values), connect_kwargs(values, password))
    try:
        client.ping()
    except (redis.AuthenticationError, redis.ResponseError) as exc:
        client.close()
        if password is None and "auth" in str(exc).lower():
            raise LabError(
                f"Redis at {where(values)} needs a password: give password_file=PATH"
            ) from None
        if isinstance(exc, redis.AuthenticationError) or "WRONGPASS" in str(exc):
            raise LabError(
                f"Redis at {where(values)} refused the login: wrong password or user "
                "(check password_file= and username=)"
            ) from None
        raise LabError(f"Redis at {where(values)} answered: {exc}") from None
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        client.close()
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LabError(
            f"cannot reach Redis at {where(values)}: {reason} (is redis-server running there? "
            "check url=)"
        ) from None
    return client


def check_version(client: Any, values: Mapping[str, Any]) -> None:
    """Refuse a server older than 6.0 (SET ... KEEPTTL keeps a key's expiry); a user
    not allowed INFO is let through (its server's version cannot be told)."""
    try:
        version = str(client.info("server").get("redis_version", ""))
    except redis_module().ResponseError:
        return
    major = version.partition(".")[0]
    if major.isdigit() and int(major) < MIN_SERVER_MAJOR:
        raise LabError(
            f"Redis at {where(values)} is version {version}: the Redis mechanisms need "
            f"{MIN_SERVER_MAJOR}.0 or later"
        )


def default_namespace(set_id: int, group: Group | None) -> str:
    if group is not None:
        return f"ipclab:group:{group.gid}"
    return f"ipclab:{socket.gethostname()}:{set_id}:{secrets.token_hex(3)}"


def ttl_ms(values: Mapping[str, Any]) -> int:
    """The expiry of the set's keys, in milliseconds (``key_ttl=``)."""
    return max(1, round(float(values.get("key_ttl") or KEY_TTL_S) * 1000))


# One script claims a namespace: free, or already the same group's (the group's parts
# join it); then counts the part in, creates the first ZEROED data keys as 0 (so that
# they carry their expiry from the start) and gives every key its expiry.
# KEYS: owner, parts, then the namespace's data keys; ARGV: claim, joinable, ttl, zeroed.
_CLAIM = """
local owner = redis.call('GET', KEYS[1])
if owner == false then
  for i = 3, #KEYS do
    if redis.call('EXISTS', KEYS[i]) == 1 then return 'leftover:' .. KEYS[i] end
  end
  redis.call('SET', KEYS[1], ARGV[1])
elseif owner ~= ARGV[1] or ARGV[2] ~= '1' then
  return 'owned:' .. owner
end
redis.call('INCR', KEYS[2])
for i = 3, 2 + tonumber(ARGV[4]) do redis.call('SET', KEYS[i], '0', 'NX') end
for i = 1, #KEYS do redis.call('PEXPIRE', KEYS[i], ARGV[3]) end
return 'ok'
"""
# And one releases it: the last part reads the final figures and removes every key.
_RELEASE = """
local left = redis.call('DECR', KEYS[2])
if left > 0 then return {0} end
local out = {1}
for i = 3, #KEYS do out[#out + 1] = redis.call('GET', KEYS[i]) or '' end
redis.call('DEL', unpack(KEYS))
return out
"""


class Namespace:
    """The keys of one set (or one group), claimed at setup and removed at the end.

    ``zeroed``: the data keys (the first of ``data``) made 0 at the claim, with their
    expiry, rather than by the workers' first write (which would give them none).
    """

    def __init__(self, prefix: str, data: Sequence[str], zeroed: int = 0) -> None:
        self.prefix = prefix
        self.owner = f"{prefix}:owner"
        self.parts = f"{prefix}:parts"
        self.data = {name: f"{prefix}:{name}" for name in data}
        self.zeroed = zeroed

    def keys(self) -> list[str]:
        return [self.owner, self.parts, *self.data.values()]

    def claim(self, client: Any, claim: str, joinable: bool, ttl: int) -> None:
        """Take the namespace (or join the group's); every key expires in ``ttl`` ms."""
        keys = self.keys()
        flag = "1" if joinable else "0"
        result = client.eval(_CLAIM, len(keys), *keys, claim, flag, ttl, self.zeroed)
        text = result.decode() if isinstance(result, bytes) else str(result)
        if text == "ok":
            return
        kind, _, what = text.partition(":")
        if kind == "owned":
            raise LabError(
                f"Redis key namespace {self.prefix} is already in use (by {what}): "
                "give another namespace="
            )
        raise LabError(
            f"Redis key namespace {self.prefix} holds keys of an earlier run ({what}): "
            f"delete them (redis-cli --scan --pattern '{self.prefix}:*' | xargs redis-cli del) "
            "or give another namespace="
        )

    def renew(self, client: Any, ttl: int) -> None:
        """Push every key's expiry ``ttl`` ms ahead, in one round trip (keys that do
        not exist stay so)."""
        pipe = client.pipeline(transaction=False)
        for key in self.keys():
            pipe.pexpire(key, ttl)
        pipe.execute()

    def release(self, client: Any) -> dict[str, bytes] | None:
        """Leave; the last part gets the data keys' final values (then all are gone)."""
        out = client.eval(_RELEASE, len(self.keys()), *self.keys())
        if not out or int(out[0]) != 1:
            return None
        return dict(zip(self.data, out[1:], strict=True))
