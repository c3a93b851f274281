"""The systemd unit of labd: rendered with the installed labd's absolute path.

``systemd/labd.service`` in the repository is this template rendered for
``/usr/local/bin/labd`` (a test keeps them identical). A ``--user`` unit drops what a
user manager cannot apply (a dedicated user, capability and device sandboxing).
"""

from __future__ import annotations

from labd.protocol import TIMEOUT_STOP_S

HEADER = """\
# ipclab's daemon as a system service. `labd install-unit` writes this file with the
# absolute path of the installed labd; `labd install-unit --user` a user-service variant.
"""

TEMPLATE = """\
[Unit]
Description=ipclab lab daemon: process sets for Python IPC, measured
After=network.target

[Service]
Type=notify
NotifyAccess=main
ExecStart={labd} --allow-group ipclab
WatchdogSec=30
KillMode=mixed
TimeoutStopSec={timeout_stop}
# labd's own cgroup: each set runs in a cgroup of its own below it, which a stop kills
# whole (so ProtectControlGroups= stays off: it would make that cgroup read-only)
Delegate=yes
Restart=on-failure
RestartSec=2
User=ipclab
Group=ipclab
RuntimeDirectory=ipclab
RuntimeDirectoryMode=0750
StateDirectory=ipclab
StateDirectoryMode=0700
UMask=0077
LimitNOFILE=65536
# Workers need /dev/shm (semaphores, shared memory) and unix sockets; nothing else.
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
DevicePolicy=closed
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
ProcSubset=pid
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
RemoveIPC=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged
SystemCallErrorNumber=EPERM
# Remote control (mutual TLS) needs the listen address open; loopback only by default.
IPAddressDeny=any
IPAddressAllow=localhost

[Install]
WantedBy=multi-user.target
"""

#: directives a user service manager cannot apply (no privileges to drop or sandbox)
SYSTEM_ONLY = (
    "User=",
    "Group=",
    "CapabilityBoundingSet=",
    "AmbientCapabilities=",
    "PrivateDevices=",
    "DevicePolicy=",
    "ProtectKernel",
    "ProtectClock=",
    "ProtectHostname=",
    "ProtectProc=",
    "ProcSubset=",
    "RestrictNamespaces=",
    "MemoryDenyWriteExecute=",
    "RemoveIPC=",
    "SystemCallFilter=",
    "SystemCallErrorNumber=",
    "SystemCallArchitectures=",
    "IPAddress",
    "LockPersonality=",
    "RestrictRealtime=",
    "RestrictSUIDSGID=",
    "RestrictAddressFamilies=",
    "PrivateTmp=",
    "ProtectSystem=",
    "ProtectHome=",
)


def render(labd: str, *, user: bool = False) -> str:
    """The unit text for the labd at absolute path ``labd``."""
    if not labd.startswith("/"):
        raise ValueError(f"ExecStart needs an absolute path, not {labd!r}")
    text = HEADER + TEMPLATE.format(labd=labd, timeout_stop=TIMEOUT_STOP_S)
    if not user:
        return text
    text = text.replace(" --allow-group ipclab\n", "\n")  # a user's own labd: no group
    lines = [line for line in text.splitlines() if not line.startswith(SYSTEM_ONLY)]
    out = "\n".join(lines) + "\n"
    return out.replace("WantedBy=multi-user.target", "WantedBy=default.target")
