"""A lab host that holds a class: labd, supervisord and circusd each holding the same N
paced processes, side by side in one run (see bench/README.md, "scale.py").

For each N (100, 500, 1000 by default) and each manager, in an order that rotates
between repeats: the time to start them all, the daemon's CPU with no client, one
client's status latency (p50/p99), 50 clients asking for status at 10 Hz (calls
answered per second, p50/p99, the daemon's CPU meanwhile), the workers' unique memory,
and the time to stop them all. Then ratios, the issue's anchors and the goals.

    python bench/scale.py                          # everything, ~15 minutes on 2 cores
    python bench/scale.py --n 100 --seconds 2      # a quick look
    python bench/scale.py --only labd --n 1000     # labd alone
    python bench/scale.py --venv /tmp/scale-venv   # keep (and reuse) the managers' venv

supervisor and circus are installed from PyPI into a virtualenv of the benchmark's own
(a temporary directory unless ``--venv`` names one), never into the project's.
Standard library at the top (see benchlib).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchlib import machine
from scale_systems import SYSTEMS, BenchVenv, LabdBefore, variant

HERE = Path(__file__).resolve().parent
CLIENTS_PER_PROCESS = 10
#: the issue's figures for labd 0.1 at N = 1000 (8 sets of 125, paced; load 5-7)
ANCHORS = {
    "start_s": 57.0,
    "idle_cpu": 24.0,
    "one_p50_ms": 8.6,
    "one_p99_ms": 133.0,
    "load_answered": 132.0,
    "load_p99_ms": 2400.0,
    "uss_mb": 4.6,
    "stop_s": 1.7,
}


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root: int) -> float:
    """CPU time of ``root`` and every process below it (alive, or reaped by one of them)."""
    tick = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    used: dict[int, float] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        parent[int(entry.name)] = int(fields[1])
        used[int(entry.name)] = sum(int(x) for x in fields[11:15]) / tick
    below = {root}
    grew = True
    while grew:
        more = {pid for pid, ppid in parent.items() if ppid in below} - below
        grew = bool(more)
        below |= more
    return sum(used.get(pid, 0.0) for pid in below)


def quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_clients(system: Any, clients: int, hz: float, seconds: float) -> dict[str, Any]:
    """``clients`` status clients (threads, CLIENTS_PER_PROCESS per process) at ``hz``."""
    start_at = time.time() + 3.0 + 0.1 * clients  # every client connected by then
    procs = []
    left = clients
    while left > 0:
        threads = min(CLIENTS_PER_PROCESS, left)
        left -= threads
        kind = getattr(system, "client_kind", system.name)
        command = [system.client_python, str(HERE / "scale_clients.py"), kind]
        command += [system.status_address, "--threads", str(threads), "--hz", str(hz)]
        command += ["--seconds", str(seconds), "--start-at", str(start_at)]
        procs.append(subprocess.Popen(command, stdout=subprocess.PIPE, text=True))
    time.sleep(max(0.0, start_at - time.time()))
    cpu0 = cpu_seconds(system.daemon_pid)
    lat: list[float] = []
    at: list[float] = []
    errors: list[str] = []
    nerrors = late = 0
    for p in procs:
        out, _ = p.communicate(timeout=seconds + 120)
        result = json.loads(out.strip().splitlines()[-1]) if out.strip() else {"lat": []}
        lat += result["lat"]
        at += result.get("at", [])
        errors += result.get("errors", [])
        nerrors += result.get("nerrors", 0)
        late += bool(result.get("late"))
    cpu = (cpu_seconds(system.daemon_pid) - cpu0) / seconds * 100
    return {
        "answered": len(lat) / seconds,
        "p50_ms": _ms(quantile(lat, 0.50)),
        "p99_ms": _ms(quantile(lat, 0.99)),
        "cpu": cpu,
        "errors": nerrors,
        "late_processes": late,  # client processes not connected when the window opened
        "error_sample": errors[:3],
        "p99_ms_by_tenth": by_tenth(lat, at),
    }


def by_tenth(lat: list[float], at: list[float]) -> list[float | None]:
    """The p99 of the calls that began in each tenth of a monotonic second (paced workers
    tick at whole seconds, plus their set's phase): where in the second the tail is."""
    bins: list[list[float]] = [[] for _ in range(10)]
    for latency, t0 in zip(lat, at, strict=False):
        bins[int(t0 % 1.0 * 10) % 10].append(latency)
    return [round(ms, 1) if (ms := _ms(quantile(b, 0.99))) is not None else None for b in bins]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def worker_uss_mb(pids: list[int], sample: int = 30) -> float | None:
    import psutil

    step = max(1, len(pids) // sample)
    values = []
    for pid in pids[::step][:sample]:
        try:
            values.append(psutil.Process(pid).memory_full_info().uss / 2**20)
        except psutil.Error:
            continue
    return statistics.mean(values) if values else None


#: the baseline of a start: a bare interpreter (python -S) forking N children that wait
BARE_FORK = (
    "import os, signal, sys, time\n"
    "n = int(sys.argv[1]); t = time.perf_counter(); pids = []\n"
    "for _ in range(n):\n"
    "    pid = os.fork()\n"
    "    if pid == 0:\n"
    "        signal.pause(); os._exit(0)\n"
    "    pids.append(pid)\n"
    "print(time.perf_counter() - t, flush=True)\n"
    "for pid in pids: os.kill(pid, signal.SIGKILL)\n"
    "for pid in pids: os.waitpid(pid, 0)\n"
)


def bare_fork_s(n: int) -> float:
    """Seconds a bare interpreter takes to fork n waiting children, run just before each
    manager's start in a session of its own (as each daemon is: kernel autogroups)."""
    out = subprocess.run(
        [sys.executable, "-S", "-c", BARE_FORK, str(n)],
        capture_output=True,
        text=True,
        check=True,
        start_new_session=True,
    )
    return float(out.stdout.split()[0])


def measure(name: str, n: int, args: argparse.Namespace, venv: BenchVenv) -> dict[str, Any]:
    row: dict[str, Any] = {"system": name, "n": n, "bare_s": bare_fork_s(n)}
    system = SYSTEMS[name](args.set_size, venv)
    try:
        cpu_before = tree_cpu_seconds(system.daemon_pid)
        row["start_s"] = system.start(n)
        row["start_cpu_ms"] = (tree_cpu_seconds(system.daemon_pid) - cpu_before) / n * 1000
        row["start_x_bare"] = row["start_s"] / row["bare_s"]
        time.sleep(args.settle)
        cpu0 = cpu_seconds(system.daemon_pid)
        time.sleep(args.idle_seconds)
        row["idle_cpu"] = (cpu_seconds(system.daemon_pid) - cpu0) / args.idle_seconds * 100
        one = run_clients(system, 1, args.one_hz, args.seconds)
        row["one_p50_ms"], row["one_p99_ms"] = one["p50_ms"], one["p99_ms"]
        load = run_clients(system, args.clients, args.hz, args.seconds)
        row.update({f"load_{k}": v for k, v in load.items()})
        row["uss_mb"] = worker_uss_mb(system.worker_pids())
        row["stop_s"] = system.stop_all()
    except Exception as exc:
        row["error"] = f"{type(exc).__name__}: {exc}"
        print(f"# {name} N={n}: {row['error']}", file=sys.stderr)
    finally:
        system.close()
    print(f"# {json.dumps(row)}", file=sys.stderr)
    return row


def median_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out = dict(rows[0])
    for key, value in rows[0].items():
        if isinstance(value, float):
            values = [r[key] for r in rows if isinstance(r.get(key), float)]
            out[key] = statistics.median(values) if values else None
    return out


COLUMNS = (
    ("start_s", "start s", "{:.1f}"),
    ("start_x_bare", "start / bare fork", "{:.0f}x"),
    ("start_cpu_ms", "start CPU ms/proc", "{:.1f}"),
    ("idle_cpu", "idle CPU%", "{:.1f}"),
    ("one_p50_ms", "1 client p50 ms", "{:.2f}"),
    ("one_p99_ms", "p99 ms", "{:.2f}"),
    ("load_answered", "clients answered/s", "{:.0f}"),
    ("load_p50_ms", "p50 ms", "{:.1f}"),
    ("load_p99_ms", "p99 ms", "{:.1f}"),
    ("load_cpu", "daemon CPU%", "{:.0f}"),
    ("uss_mb", "worker USS MB", "{:.2f}"),
    ("stop_s", "stop s", "{:.2f}"),
)


def _cell(row: dict[str, Any], key: str, fmt: str) -> str:
    value = row.get(key)
    return "-" if value is None else fmt.format(value)


def table(rows: list[dict[str, Any]]) -> list[str]:
    head = ["N", "system", *(title for _, title, _ in COLUMNS)]
    body = [
        [str(r["n"]), r["system"], *(_cell(r, k, f) for k, _, f in COLUMNS)]
        + ([f"({r['error']})"] if r.get("error") else [])
        for r in rows
    ]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |"
    out = [line, "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    for r in body:
        cells = [
            c.rjust(w) if i != 1 else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=False))
        ]
        out.append("| " + " | ".join(cells) + " |" + (" " + r[-1] if len(r) > len(widths) else ""))
    return out


def _ratio(a: Any, b: Any) -> str:
    return f"{a / b:.1f}x" if isinstance(a, float) and isinstance(b, float) and b > 0 else "-"


def summary(rows: list[dict[str, Any]], args: argparse.Namespace) -> list[str]:
    n = max(args.n)
    at = {r["system"]: r for r in rows if r["n"] == n}
    lab = at.get("labd")
    if lab is None:
        return []
    out = [f"ratios at N={n} (other / labd; higher is better for labd):"]
    for other in [x for x in at if x.startswith("labd-")] + ["supervisor", "circus"]:
        o = at.get(other)
        if o is None:
            continue
        out.append(
            f"  {other}: status p99 {_ratio(o.get('one_p99_ms'), lab.get('one_p99_ms'))}, "
            f"50-client p99 {_ratio(o.get('load_p99_ms'), lab.get('load_p99_ms'))}, "
            f"start {_ratio(o.get('start_s'), lab.get('start_s'))} "
            f"(against a bare fork: {_ratio(o.get('start_x_bare'), lab.get('start_x_bare'))}; "
            f"CPU per process {_ratio(o.get('start_cpu_ms'), lab.get('start_cpu_ms'))}), "
            f"idle CPU {_ratio(o.get('idle_cpu'), lab.get('idle_cpu'))}"
        )
    anchors = ", ".join(
        f"{k} {v:g} -> {_cell(lab, k, '{:.3g}')} ({_ratio(v, lab.get(k))})"
        for k, v in ANCHORS.items()
        if k not in ("load_answered",)
    )
    out.append(f"the issue's labd 0.1 at N=1000 -> now (before/after): {anchors}")
    out += goals(lab, at, args)
    return out


def goals(lab: dict[str, Any], at: dict[str, Any], args: argparse.Namespace) -> list[str]:
    def value(row: dict[str, Any], key: str) -> float:
        v = row.get(key)
        return float("inf") if v is None else float(v)

    others = [value(at[o], "one_p99_ms") for o in ("supervisor", "circus") if o in at]
    asked = args.clients * args.hz
    checks = [
        (
            "status p99 >= 10x lower than supervisor's and circus's",
            bool(others) and all(o >= 10 * value(lab, "one_p99_ms") for o in others),
        ),
        (
            f"all {asked:.0f} calls/s answered with p99 < 50 ms",
            (lab.get("load_answered") or 0.0) >= 0.97 * asked
            and value(lab, "load_p99_ms") < 50
            and not lab.get("load_errors"),
        ),
        ("daemon CPU < 5 % of a core with no client", value(lab, "idle_cpu") < 5),
        (f"start of {lab['n']} counters < 5 s", value(lab, "start_s") < 5),
    ]
    return [f"goal: {text}: {'met' if ok else 'NOT met'}" for text, ok in checks]


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=lambda s: [int(x) for x in s.split(",")], default=[100, 500, 1000])
    ap.add_argument("--only", default="labd,supervisor,circus", help="comma-separated")
    ap.add_argument("--set-size", type=int, default=125)
    ap.add_argument("--seconds", type=float, default=5.0, help="each client window")
    ap.add_argument("--idle-seconds", type=float, default=5.0)
    ap.add_argument("--settle", type=float, default=2.0, help="after the start, before measuring")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--hz", type=float, default=10.0)
    ap.add_argument("--one-hz", type=float, default=20.0, help="the single client's pace")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--venv", type=Path, help="the managers' virtualenv (kept, reused)")
    ap.add_argument(
        "--before",
        type=Path,
        help="also run labd from this directory (holding a labd/ package) as labd-before",
    )
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=ARGS",
        help="also run labd with ARGS more options (VAR=value words: environment) as "
        "labd-NAME, interleaved with the others (repeat for more)",
    )
    ap.add_argument("--json", action="store_true", help="one JSON document on stdout")
    return ap.parse_args()


def main() -> int:
    args = parse()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up on the way out
    names = [x for x in args.only.split(",") if x]
    if args.before:
        LabdBefore.source = str(args.before.resolve())
        names.insert(1, "labd-before")
    for k, spec in enumerate(args.variant):
        names.insert(1 + k, variant(spec))
    venv = BenchVenv(args.venv)
    if any(x in ("supervisor", "circus") for x in names):
        venv.ensure()
    rows: list[dict[str, Any]] = []
    try:
        for k, n in enumerate(args.n):
            runs: dict[str, list[dict[str, Any]]] = {x: [] for x in names}
            for rep in range(args.repeat):
                shift = (k + rep) % len(names)
                for name in names[shift:] + names[:shift]:  # interleaved, rotating
                    runs[name].append(measure(name, n, args, venv))
            rows += [median_rows(runs[x]) for x in names]
    finally:
        versions = {x: venv.version(x) for x in ("supervisor", "circus") if x in names}
        venv.remove()
    info = {"machine": machine(), "versions": versions, "args": _args(args), "rows": rows}
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    m = info["machine"]
    print(
        f"machine: {m['nproc']} CPUs, Python {m['python']}, {m['platform']}, "
        f"load {m['loadavg']}; {', '.join(f'{k} {v}' for k, v in versions.items())}; "
        f"sets of {args.set_size} paced at 1 s; {args.clients} clients x {args.hz:g} Hz "
        f"for {args.seconds:g} s; repeat {args.repeat} (medians)"
    )
    print("\n".join(table(rows)))
    print("\n".join(summary(rows, args)))
    return 0


def _args(args: argparse.Namespace) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}


if __name__ == "__main__":
    sys.exit(main())
