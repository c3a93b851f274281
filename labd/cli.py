"""labd's command line: run the daemon in the foreground (systemd supervises it)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

import click

from labd import __version__
from labd.daemon import DaemonConfig
from labd.errors import LabError, UsageError
from labd.pki import DEFAULT_DAYS
from labd.protocol import (
    MAX_CLIENTS,
    MAX_PER_SET,
    MAX_PROCESSES,
    PER_SET_CEILING,
    SHUTDOWN_MARGIN_S,
    TIMEOUT_STOP_S,
    WORKER_NICE,
    Address,
    default_socket,
    default_state_dir,
    parse_address,
)
from labd.server.access import SocketAccess, gid_of, uid_of
from labd.server.admission import PER_USER

log = logging.getLogger("labd")


def _ids(convert: Callable[[str], int]) -> Callable[..., tuple[int, ...]]:
    """A click callback turning names or numbers into ids, one BadParameter each."""

    def callback(
        ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
    ) -> tuple[int, ...]:
        try:
            return tuple(convert(v) for v in values)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None

    return callback


def _address(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> tuple[Address, ...]:
    out = []
    for text in values:
        try:
            addr = parse_address(text)
        except UsageError as exc:
            raise click.BadParameter(exc.args[0]) from None
        if addr.is_unix:
            raise click.BadParameter("use --socket for a unix socket; --listen takes HOST:PORT")
        out.append(addr)
    return tuple(out)


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--socket",
    "socket_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="unix socket to listen on [default: $XDG_RUNTIME_DIR/ipclab/"
    "labd.sock, /run/ipclab/labd.sock under systemd]",
)
@click.option(
    "--listen",
    multiple=True,
    callback=_address,
    metavar="HOST:PORT",
    help="also listen on TCP (loopback only, unless TLS is configured)",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="history store and printer logs [default: $XDG_STATE_HOME/ipclab]",
)
@click.option(
    "--allow-uid",
    multiple=True,
    callback=_ids(uid_of),
    metavar="USER",
    help="also admit this local user (name or uid; repeat for more): the socket gets an "
    "ACL entry for it, and its directory is opened just enough to reach it",
)
@click.option(
    "--allow-group",
    multiple=True,
    callback=_ids(gid_of),
    metavar="GROUP",
    help="also admit members of this group (name or gid; repeat for more): the first one "
    "owns the socket (0660) and its directory (0750)",
)
@click.option(
    "--admin-group",
    multiple=True,
    callback=_ids(gid_of),
    metavar="GROUP",
    help="members of this group (name or gid; repeat for more) may stop anyone's sets and "
    "shut labd down; besides them only root and labd's own user may, and others only "
    "their own sets",
)
@click.option(
    "--admin-subject",
    multiple=True,
    metavar="SUBJECT",
    help="TLS clients whose certificate has this subject (as labd logs it, e.g. "
    "'CN=ipclab client,O=ipclab'; repeat for more) are admins, like --admin-group",
)
@click.option(
    "--max-per-user",
    type=click.IntRange(1, 65536),
    default=None,
    help="processes (counters, printers, launchers) one user's sets may have at once "
    "[default: no limit but --max-processes]",
)
@click.option(
    "--max-clients",
    type=click.IntRange(1, 65536),
    default=MAX_CLIENTS,
    show_default=True,
    help="connections served at once; more are closed at once",
)
@click.option(
    "--max-clients-per-user",
    type=click.IntRange(1, 65536),
    default=PER_USER,
    show_default=True,
    help="connections served at once to one local user (uid), or one TCP client host",
)
@click.option(
    "--max-per-set",
    type=click.IntRange(1, PER_SET_CEILING),
    default=MAX_PER_SET,
    show_default=True,
    help="counters (and printers) per set",
)
@click.option(
    "--max-processes",
    type=click.IntRange(1, 65536),
    default=MAX_PROCESSES,
    show_default=True,
    help="processes (counters, printers, launchers) in all sets together",
)
@click.option(
    "--worker-nice",
    type=click.IntRange(0, 19),
    default=WORKER_NICE,
    show_default=True,
    help="the sets' workers run this much nicer (lower priority) than labd, so that many "
    "of them busy at once leave labd free to answer; 0: at labd's own priority",
)
@click.option(
    "--stop-timeout",
    type=click.FloatRange(min=SHUTDOWN_MARGIN_S + 1.0, max=86400.0),
    default=float(TIMEOUT_STOP_S),
    show_default=True,
    help="seconds labd has to stop at SIGTERM (systemd's TimeoutStopSec): sets drain "
    f"within it less {SHUTDOWN_MARGIN_S:g} s, then are ended, their figures recorded",
)
@click.option(
    "--tls-cert",
    default=None,
    metavar="FILE",
    help="server certificate: --listen addresses then speak mutual TLS (see: labd tls init)",
)
@click.option("--tls-key", default=None, metavar="FILE", help="the server certificate's key")
@click.option(
    "--tls-ca", default=None, metavar="FILE", help="admit clients whose certificate this CA signed"
)
@click.option("-v", "--verbose", count=True, help="more log detail (-vv for debug)")
@click.version_option(__version__, prog_name="labd")
@click.pass_context
def cli(
    ctx: click.Context,
    socket_path: Path | None,
    listen: tuple[Address, ...],
    state_dir: Path | None,
    allow_uid: tuple[int, ...],
    allow_group: tuple[int, ...],
    admin_group: tuple[int, ...],
    admin_subject: tuple[str, ...],
    max_per_user: int | None,
    max_clients: int,
    max_clients_per_user: int,
    max_per_set: int,
    max_processes: int,
    worker_nice: int,
    stop_timeout: float,
    tls_cert: str | None,
    tls_key: str | None,
    tls_ca: str | None,
    verbose: int,
) -> None:
    """labd: the ipclab daemon. Runs process sets and measures them.

    It runs in the foreground and logs to stderr; `labctl` talks to it. Stop it with
    SIGTERM, Ctrl-C or `labctl shutdown`: every set is stopped in order first.
    """
    if ctx.invoked_subcommand is not None:
        return
    level = logging.WARNING - 10 * min(verbose + 1, 2)
    logging.basicConfig(level=level, stream=sys.stderr, format="labd: %(levelname)s: %(message)s")
    config = DaemonConfig(
        socket=socket_path or default_socket(),
        listen=listen,
        state_dir=state_dir or default_state_dir(),
        access=SocketAccess.of(allow_uid, allow_group),
        max_clients=max_clients,
        clients_per_user=max_clients_per_user,
        per_set=max_per_set,
        total=max_processes,
        stop_timeout=stop_timeout,
        tls=(tls_cert, tls_key, tls_ca),
        admin_gids=admin_group,
        admin_subjects=admin_subject,
        per_user=max_per_user,
        worker_nice=worker_nice,
    )
    from labd.daemon import serve

    try:
        code = serve(config)
    except LabError as exc:
        click.echo(f"labd: {exc.message}", err=True)
        code = exc.exit_code
    sys.exit(code)


@cli.command("install-unit")
@click.option("--user", "user_unit", is_flag=True, help="a user service (systemctl --user)")
@click.option("--print", "to_stdout", is_flag=True, help="print the unit instead of writing it")
@click.option("--labd", "labd_path", default=None, help="labd to run [default: this one]")
def install_unit(user_unit: bool, to_stdout: bool, labd_path: str | None) -> None:
    """Write labd's systemd unit, with the absolute path of the installed labd."""
    import shutil

    from labd.unit import render

    running = Path(sys.argv[0])  # the labd script running now: the real one, not a shim
    this = str(running) if running.name == "labd" and running.is_file() else None
    path = labd_path or this or shutil.which("labd") or str(running.resolve())
    try:
        text = render(str(Path(path).resolve()), user=user_unit)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if to_stdout:
        click.echo(text, nl=False)
        return
    if user_unit:
        target = Path.home() / ".config/systemd/user/labd.service"
        then = "systemctl --user daemon-reload && systemctl --user enable --now labd"
    else:
        target = Path("/etc/systemd/system/labd.service")
        then = (
            "useradd --system --no-create-home ipclab; "
            "systemctl daemon-reload && systemctl enable --now labd"
        )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    except OSError as exc:
        raise click.ClickException(f"cannot write {target}: {exc.strerror or exc}") from None
    click.echo(f"wrote {target}\nthen: {then}")


@cli.group("tls")
def tls_group() -> None:
    """Certificates for remote control over mutual TLS."""


@tls_group.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--host",
    "hosts",
    multiple=True,
    required=True,
    metavar="NAME",
    help="a DNS name or IP address clients use to reach labd (repeat for more); "
    "localhost, 127.0.0.1 and ::1 are always included",
)
@click.option(
    "--days",
    type=click.IntRange(1, 36500),
    default=DEFAULT_DAYS,
    show_default=True,
    help="validity of the CA and both certificates",
)
@click.option("--force", is_flag=True, help="replace files that are already there")
def tls_init(directory: Path, hosts: tuple[str, ...], days: int, force: bool) -> None:
    """Write a private CA, labd's certificate and labctl's certificate into DIRECTORY.

    \b
    DIRECTORY (created mode 0700) gets:
      ca.crt, ca.key          the CA; ca.key only signs, labd does not need it
      server.crt, server.key  for labd, valid for every --host
      client.crt, client.key  for labctl (copy them and ca.crt to the controlling host)
    Keys are mode 0600. Existing files are kept unless --force.
    """
    from labd import pki

    try:
        issued = pki.init(directory, hosts, days=days, force=force)
    except UsageError as exc:
        raise click.BadParameter(exc.args[0].removeprefix("--host "), param_hint="--host") from None
    except FileExistsError as exc:
        raise click.ClickException(str(exc.args[0])) from None
    except OSError as exc:
        where = exc.filename or directory
        raise click.ClickException(f"cannot write {where}: {exc.strerror or exc}") from None
    click.echo(pki.next_steps(issued))
