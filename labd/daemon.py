"""labd's composition root: build the Lab and its listeners from a DaemonConfig, run
until SIGTERM, SIGINT or a shutdown request, and stop in order."""

from __future__ import annotations

import logging
import resource
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path

from labd import __version__
from labd.errors import ConfigError
from labd.protocol import (
    MAX_CLIENTS,
    MAX_PER_SET,
    MAX_PROCESSES,
    SHUTDOWN_MARGIN_S,
    TIMEOUT_STOP_S,
    WORKER_NICE,
    Address,
)
from labd.server.access import PRIVATE, SocketAccess
from labd.server.admission import PER_USER, ClientLimits

log = logging.getLogger("labd")


@dataclass(frozen=True)
class DaemonConfig:
    socket: Path
    listen: tuple[Address, ...]
    state_dir: Path
    access: SocketAccess = PRIVATE
    max_clients: int = MAX_CLIENTS
    clients_per_user: int = PER_USER
    per_set: int = MAX_PER_SET
    total: int = MAX_PROCESSES
    stop_timeout: float = TIMEOUT_STOP_S  # seconds, from SIGTERM to exit
    tls: tuple[str | None, str | None, str | None] = field(default=(None, None, None))
    admin_gids: tuple[int, ...] = ()  # --admin-group: may stop anyone's sets, shut down
    admin_subjects: tuple[str, ...] = ()  # --admin-subject: the same, for TLS clients
    per_user: int | None = None  # --max-per-user: processes of one user's sets
    worker_nice: int = WORKER_NICE  # --worker-nice: the workers' niceness above labd's


def serve(config: DaemonConfig) -> int:
    """Run until SIGTERM, SIGINT or a shutdown request; 0 after an orderly stop."""
    from labd.cgroups import Containment
    from labd.lab import Lab, Limits
    from labd.leftovers import become_subreaper
    from labd.notify import Notifier
    from labd.owners import Admins
    from labd.remains import private_mp_temp_dir
    from labd.server.listener import listen, load_tls

    tls = load_tls(*config.tls, config.listen)  # every TLS or address error, before starting
    _raise_fd_limit()
    notifier = Notifier()
    stop = threading.Event()
    lab = Lab(
        config.state_dir,
        limits=Limits(config.per_set, config.total, per_user=config.per_user),
        runtime_dir=config.socket.parent,
        on_change=lambda summary: notifier.status(summary),
    )
    lab.admins = Admins.of(config.admin_gids, config.admin_subjects)
    lab.worker_nice = config.worker_nice
    clients = ClientLimits(config.max_clients, config.clients_per_user)
    listeners = [
        listen(Address(path=str(config.socket)), lab, stop.set, config.access, limits=clients)
    ]
    try:
        listeners += [listen(a, lab, stop.set, tls=tls, limits=clients) for a in config.listen]
    except ConfigError:
        for item in listeners:
            item.close()
        raise
    lab.address = ", ".join(str(item.address) for item in listeners)
    private_mp_temp_dir(config.socket.parent)  # before the forkserver starts (lab.start)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())  # handlers only hand off
    become_subreaper()  # orphans of the sets' processes come back to labd, not to init
    # once every start-up check passed (each error is one line), before any process starts
    lab.containment = Containment.setup()
    lab.start()
    for item in listeners:
        item.start()
    log.info("labd %s listening on %s (state in %s)", __version__, lab.address, config.state_dir)
    notifier.send(f"READY=1\nSTATUS=listening on {lab.address}")
    while not stop.wait(notifier.watchdog or 1.0):
        if notifier.watchdog and lab.healthy():
            notifier.send("WATCHDOG=1")
    log.info("stopping: %s", lab.summary())
    notifier.send("STOPPING=1")
    for item in listeners:
        item.stop_accepting()
    lab.close(within=config.stop_timeout - SHUTDOWN_MARGIN_S)
    for item in listeners:
        item.close()
    log.info("stopped")
    return 0


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError) as exc:
            log.warning("cannot raise the open-file limit from %d: %s", soft, exc)
