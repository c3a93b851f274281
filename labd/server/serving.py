"""One client connection served with the least work per call.

rpyc's own loop (``Connection.serve_all``) asks the kernel three times for each request:
``poll`` until the socket is readable, a read for the frame's header, a read for its
body; and it compresses every answer above 3 KB (a status answer at 8 sets is ~5 KB).
Each system call lets go of the GIL and must take it back, and with 50 clients polling
and the sampler ticking, taking it back is where a call waits. Here a connection's
thread blocks in one read that brings the whole request (the stream reads ahead), and
answers with one uncompressed write: two system calls a call, no zlib on either side
(a client still reads compressed frames: the flag travels in each frame's header, and
labd still reads those a client compresses).

The protocol, the service, the access rules and the answers are rpyc's and labd's own:
only the reading, the compression and the loop around ``Connection._dispatch`` differ.
This module leans on rpyc's private names (``_channel``, ``_recvlock``,
``_recv_event``, ``_dispatch``, ``_bind_threads``): check it when rpyc is upgraded
(``tests/test_serving.py`` drives it with a real rpyc client).
"""

from __future__ import annotations

import errno
import socket
from typing import Any

from rpyc.core.channel import Channel
from rpyc.core.stream import SocketStream

READ_AHEAD = 1 << 16  # bytes asked of the kernel per read: a whole request, usually
_RETRY = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR})


class ReadAheadStream(SocketStream):
    """rpyc's socket stream, reading up to :data:`READ_AHEAD` bytes at a time and
    keeping what the frame being read does not need for the next read."""

    __slots__ = ("_ahead",)

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        self._ahead = bytearray()

    def poll(self, timeout: Any) -> bool:
        return bool(self._ahead) or bool(super().poll(timeout))

    def read(self, count: int) -> bytes:
        ahead = self._ahead
        while len(ahead) < count:
            try:
                chunk = self.sock.recv(max(READ_AHEAD, count - len(ahead)))
            except TimeoutError:
                continue  # as rpyc's own stream does
            except OSError as exc:
                if exc.errno in _RETRY:
                    continue
                self.close()
                raise EOFError(exc) from None
            if not chunk:
                self.close()
                raise EOFError("connection closed by peer")
            ahead += chunk
        data = bytes(ahead[:count])
        del ahead[:count]
        return data


def serve_connection(
    service: Any, sock: socket.socket, protocol_config: dict[str, Any], credentials: Any
) -> None:
    """What rpyc's ``Server._serve_client`` does, with the stream and loop above."""
    config = dict(
        protocol_config,
        credentials=credentials,
        endpoints=(sock.getsockname(), sock.getpeername()),
    )
    channel = Channel(ReadAheadStream(sock), compress=False)
    serve_all(service._connect(channel, config))


def serve_all(conn: Any) -> None:
    """``conn.serve_all()`` without a ``poll`` before each request: the read blocks.

    As in rpyc's ``Connection.serve``: the receive lock is held while a frame is read and
    released by ``_dispatch`` (before it runs a request, so a nested call the request
    makes can read its own reply), and threads waiting for that lock are woken after."""
    if conn._bind_threads:  # not labd's configuration: rpyc's own loop knows that mode
        conn.serve_all()
        return
    channel, lock, ready = conn._channel, conn._recvlock, conn._recv_event
    try:
        while not conn.closed:
            lock.acquire()
            try:
                data = channel.recv()
            except BaseException:
                lock.release()
                raise
            if not data:  # an empty frame: rpyc's loop takes it for no request at all
                lock.release()
                continue
            try:
                conn._dispatch(data)
            finally:
                with ready:
                    ready.notify_all()
    except EOFError:
        pass
    except OSError:
        if not conn.closed:
            raise
    finally:
        conn.close()
