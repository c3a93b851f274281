"""TLS clients as admins: a TLS client has no uid, so only ``labd --admin-subject``
makes one an admin (it may then shut labd down); any other TLS client may not."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from daemonkit import DaemonFactory
from helpers import free_port, wait_for
from test_tls import Pki, assert_one_line_error, client_context, labctl, new_pki, tls_ready

pytestmark = pytest.mark.daemon
SUBJECT = "CN=ipclab client,O=ipclab"  # what labd tls init issues to clients


@pytest.fixture(scope="module")
def pki() -> Iterator[Pki]:
    yield from new_pki()


def tls_labd(factory: DaemonFactory, pki: Pki, *args: str) -> str:
    port = free_port()
    factory(("--listen", f"127.0.0.1:{port}", *pki.labd_args(), *args))
    good = client_context(pki.ca_crt, pki.client_crt, pki.client_key)
    wait_for(lambda: tls_ready(good, port), 10, "the TLS listener")
    return f"127.0.0.1:{port}"


def test_a_tls_client_shuts_labd_down_only_as_an_admin_subject(
    labd_factory: DaemonFactory, pki: Pki
) -> None:
    plain = tls_labd(labd_factory, pki, "--admin-subject", "CN=someone else,O=ipclab")
    done = labctl(plain, pki.client_crt, pki.client_key, pki.ca_crt, "shutdown")
    assert "only an admin may" in assert_one_line_error(done, 1)
    assert labd_factory.daemons[0].proc.poll() is None, "labd stopped for a non-admin"

    admin = tls_labd(labd_factory, pki, "--admin-subject", SUBJECT)
    done = labctl(admin, pki.client_crt, pki.client_key, pki.ca_crt, "shutdown")
    assert done.returncode == 0, done.stderr
    assert labd_factory.daemons[1].wait() == 0
