"""The Redis mechanisms flat out in labd, against a bare redis-py loop beside them.

For each case (``redis`` with op=getset, incr and watch, ``redis-queue``,
``redis-pubsub``), with ``--counters`` processes at ``interval=0``, this alternates a
labd set and a hand-written loop doing the same commands on the same private
redis-server (a unix socket in a temporary directory), and prints the increments per
second of each and their ratio ``labd / bare`` (target: >= 0.95). Then, to show the price of
crossing the host boundary, the cost of one increment (us per increment per counter)
of each Redis case beside labd's built-ins (shared lock=yes, manager, queue) measured
in the same run, and the bare round trip of a PING.

    python bench/redis_bench.py [--seconds S] [--warmup S] [--repeat N] [--counters N]
                          [--only CASE] [--seed N] [--json] [--together]
    python bench/redis_bench.py --from RUN.json [--from RUN2.json ...]

Each of the ``--repeat`` pairs per case is one bare run and one labd run back to back
(which goes first is balanced and shuffled; every case's r-th pair runs before any
case's next, in a shuffled order). Per case it reports the median of the pairs' ratios
``labd / bare``, the sign test's one-sided 95 % lower bound for that median
(bench/pairstats.py: whatever the ratios' distribution), and a verdict against the
target: "met" when the bound is at least 0.95, "BELOW" when even the upper bound is
under it, "undecided (noise)" otherwise, with about how many pairs would decide it.
Exit code: 0 every case met, 1 one below, 3 one undecided. Runs saved with ``--json``
are pairs all the same: ``--from`` judges several runs' pairs pooled.

``--together`` runs both sides at once over the same windows instead of one after the
other: on a shared host whose load comes and goes by the second, alternating runs of one
side spread 2-5x, while a load hits two sides that run together alike (each then gets
about half the machine, so its absolute rates are halved); a pair is then the two sides
of one window. On this repository's 2-core VM it spreads the ratios far wider
(0.46-2.25 for op=watch): two sets of flat-out counters and one server on two CPUs
wake each other in a different order every run.

Fair to both sides: the benchmark runs in a session of its own, and labd (so its
workers) and the bare loops both run in it (the kernel's autogroup scheduling shares
the CPUs between sessions first); each side runs the same number of counters and of
printers (one: a BRPOP or SUBSCRIBE loop for redis-queue and redis-pubsub; for the
``redis`` ops, a GET of the key ten times a second, as labd's printer does) on
connections made the same way
(``redis.Redis`` on the unix socket); each side's rate is read over its window without
polling during it (labd's from the times its sampler took its figures).

Beside the rates, each side's CPU per increment over the same window (``cpu ratio =
bare / labd``): the bare loops' processes, and labd's set with labd itself (its
sampler reads the figures ten times a second; that is part of what a set costs). On a
host whose load comes and goes, the share of the CPUs a side gets swings its rate 2-5x
from run to run; what an increment costs in CPU swings far less, so on a loaded host
the CPU ratio is the one that shows labd's overhead.

Needs redis-server (Debian's, `make debian-tools`) and the redis package
(`pip install -e '.[redis]'`). The module is re-imported by every forkserver child, so
only the standard library is imported at the top.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchlib import PrivateLabd, machine, own_session
from pairstats import (
    BELOW,
    MET,
    UNDECIDED,
    add_options,
    at_least_verdict,
    median_lower_bound,
    pairs_needed,
)
from pairstats import schedule as pair_schedule

TARGET = 0.95
SESSION_FLAG = "IPCLAB_REDIS_BENCH_SESSION"
CHECK_EVERY = 20  # a bare counter publishes its count and looks at the stop flag
PAYLOAD = 16
MAXSIZE = 1000
COUNTER_OPS = ("getset", "incr", "watch")


@dataclass(frozen=True)
class Case:
    label: str
    mechanism: str
    params: tuple[tuple[str, str], ...] = ()

    @property
    def op(self) -> str:
        return dict(self.params).get("op", self.mechanism)


CASES = (
    Case("redis op=getset", "redis", (("op", "getset"),)),
    Case("redis op=incr", "redis", (("op", "incr"),)),
    Case("redis op=watch", "redis", (("op", "watch"),)),
    Case("redis-queue", "redis-queue"),
    Case("redis-pubsub", "redis-pubsub"),
)
BUILTINS = (
    Case("shared lock=yes", "shared", (("lock", "yes"),)),
    Case("manager", "manager"),
    Case("queue", "queue"),
)


# --- the bare side: what someone would write by hand ---------------------------------
def bare_counter(sock: str, op: str, slot: Any, index: int, stop: Any) -> None:
    import redis

    r = redis.Redis(unix_socket_path=sock)
    key = f"bare:{op}"
    data = b":" + b"x" * PAYLOAD
    count, clock = 0, time.time_ns
    pipe = r.pipeline()
    while not stop.is_set():
        for _ in range(CHECK_EVERY):
            if op == "getset":
                r.set(key, int(r.get(key) or 0) + 1)
            elif op == "incr":
                r.incr(key)
            elif op == "watch":
                while True:
                    try:
                        pipe.watch(key)
                        v = int(pipe.get(key) or 0)
                        pipe.multi()
                        pipe.set(key, v + 1)
                        pipe.execute()
                        break
                    except redis.WatchError:
                        pass
            elif op == "redis-queue":
                size = r.lpush(key, b"%d%s" % (clock(), data))
                while size > MAXSIZE and not stop.is_set():
                    time.sleep(0.001)
                    size = r.llen(key) * 2
            else:
                r.publish(key, b"%d%s" % (clock(), data))
        count += CHECK_EVERY
        slot[index] = count
    r.close()


def bare_printer(sock: str, op: str, stop: Any, ready: Any) -> None:
    import redis

    r = redis.Redis(unix_socket_path=sock)
    key = f"bare:{op}"
    if op in COUNTER_OPS:  # as labd's printer: the key's value, ten times a second
        ready.set()
        with open(os.devnull, "w") as out:
            while not stop.wait(0.1):
                print(f"Time: {int(r.get(key) or 0)}", file=out)
        return
    if op == "redis-queue":
        ready.set()
        while not stop.is_set():
            item = r.brpop(key, timeout=0.2)
            if item is not None:
                int(item[1].partition(b":")[0])
        return
    sub = r.pubsub(ignore_subscribe_messages=True)
    sub.subscribe(key)
    sub.get_message(timeout=1)
    ready.set()
    while not stop.is_set():
        msg = sub.get_message(timeout=0.2)
        if msg is not None:
            int(msg["data"].partition(b":")[0])


class BareRun:
    """The bare loops of one case, running from construction to :meth:`close`."""

    def __init__(self, sock: str, case: Case, counters: int) -> None:
        ctx = multiprocessing.get_context("forkserver")
        self.sock = sock
        self.slot = ctx.RawArray("q", counters)
        self.stop, ready = ctx.Event(), ctx.Event()
        self.procs: list[Any] = []
        self._start(ctx, bare_printer, (sock, case.op, self.stop, ready))
        ready.wait(10)
        for i in range(counters):
            self._start(ctx, bare_counter, (sock, case.op, self.slot, i, self.stop))

    def _start(self, ctx: Any, target: Any, args: tuple[Any, ...]) -> None:
        self.procs.append(ctx.Process(target=target, args=args))
        self.procs[-1].start()

    def started(self) -> bool:
        return any(self.slot)

    def read(self) -> tuple[float, int]:
        return time.monotonic(), sum(self.slot)

    def cpu(self) -> float:
        """The CPU its counters and printer have used."""
        from labd.experiments.measure import cpu_seconds  # psutil: the parent only

        return cpu_seconds([p.pid for p in self.procs])

    def close(self) -> None:
        self.stop.set()
        for p in self.procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join()
        flush(self.sock)


def flush(sock: str) -> None:
    import redis

    with redis.Redis(unix_socket_path=sock) as r:
        r.delete("bare:getset", "bare:incr", "bare:watch", "bare:redis-queue")


# --- the labd side ---------------------------------------------------------------------
class LabdRun:
    """One flat-out labd set of one case, from construction to :meth:`close`."""

    def __init__(self, labd: PrivateLabd, url: str | None, case: Case, counters: int) -> None:
        params: dict[str, Any] = {"interval": 0, **dict(case.params)}
        if url is not None:
            params["url"] = url
        self.conn = labd.conn
        spawned = self.conn.root.spawn(case.mechanism, counters, json.dumps(params))
        self.sid = json.loads(spawned)["id"]
        self.daemon_pid = labd.proc.pid if labd.proc is not None else 0
        self.pids: list[int] = []

    def status(self) -> dict[str, Any]:
        (s,) = json.loads(self.conn.root.status((self.sid,)))
        if s["state"] != "running":
            raise RuntimeError(f"set {self.sid} is {s['state']}: {s.get('error')}")
        return s  # type: ignore[no-any-return]

    def started(self) -> bool:
        return int(self.status()["attempted"]) > 0

    def read(self) -> tuple[float, int]:
        """labd's latest figures: when its sampler took them, and attempted."""
        s = self.status()
        return float(s["sampled_at"]), int(s["attempted"])

    def cpu(self) -> float:
        """The CPU labd and every process below it have used (the set's workers and
        launcher; labd's sampler and figures are part of what a set costs). The
        processes are found in /proc, not by ``inspect``: that would make labd's
        sampler measure them each tick."""
        import psutil

        from labd.experiments.measure import cpu_seconds

        if not self.pids:  # every process is there once the set counts
            below = psutil.Process(self.daemon_pid).children(recursive=True)
            self.pids = [self.daemon_pid, *(p.pid for p in below)]
        return cpu_seconds(self.pids)

    def close(self) -> None:
        self.conn.root.stop((self.sid,))


Run = BareRun | LabdRun


@dataclass(frozen=True)
class Rate:
    per_s: float  # increments a second
    cpu_us: float  # CPU (us) its processes used per increment, over the same window


def rates(runs: list[Run], warmup: float, seconds: float) -> list[Rate]:
    """Each run's increments per second over one window (the runs are going already):
    from its first increment on, a warm-up, then the window; each run is closed."""
    try:
        deadline = time.monotonic() + 60  # a loaded host starts processes slowly
        while not all(r.started() for r in runs) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(warmup)
        for r in runs:
            r.cpu()  # labd's: finds the set's processes (an rpc) before the window
        first = [(r.read(), r.cpu()) for r in runs]
        time.sleep(seconds)
        last = [(r.read(), r.cpu()) for r in runs]
    finally:
        for r in runs:
            r.close()
    out = []
    for ((t0, a0), c0), ((t1, a1), c1) in zip(first, last, strict=True):
        n = a1 - a0
        out.append(Rate(n / (t1 - t0), (c1 - c0) / n * 1e6 if n else 0.0))
    return out


def run_bare(sock: str, case: Case, counters: int, warmup: float, seconds: float) -> Rate:
    return rates([BareRun(sock, case, counters)], warmup, seconds)[0]


def run_labd(
    labd: PrivateLabd, url: str | None, case: Case, counters: int, warmup: float, seconds: float
) -> Rate:
    return rates([LabdRun(labd, url, case, counters)], warmup, seconds)[0]


def run_together(
    server_sock: str, labd: PrivateLabd, case: Case, counters: int, warmup: float, seconds: float
) -> tuple[Rate, Rate]:
    """Both sides at once, over the same window: a load that comes and goes hits both."""
    runs: list[Run] = [BareRun(server_sock, case, counters)]
    try:
        runs.append(LabdRun(labd, f"unix://{server_sock}", case, counters))
    except BaseException:
        runs[0].close()
        raise
    bare, lab = rates(runs, warmup, seconds)
    return bare, lab


# --- the run -----------------------------------------------------------------------------
class RedisServer:
    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            sys.exit("redis_bench.py: redis-server is missing (make debian-tools)")
        self.dir = Path(tempfile.mkdtemp(prefix="ipl-bench-redis"))
        self.sock = str(self.dir / "redis.sock")
        cmd = [binary, "--port", "0", "--unixsocket", self.sock, "--unixsocketperm", "700"]
        cmd += ["--save", "", "--appendonly", "no", "--dir", str(self.dir)]
        # A session of its own, as a server has: with the kernel's autogroup scheduling
        # (sched_autogroup_enabled), a client in the server's session wakes it far
        # sooner on a loaded host than one in another session, as labd's workers are
        # (measured: 5-7x). Neither side may have that advantage.
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        import redis

        deadline = time.monotonic() + 20
        while True:
            try:
                with redis.Redis(unix_socket_path=self.sock) as r:
                    r.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def ping_us(self, n: int = 2000) -> float:
        import redis

        with redis.Redis(unix_socket_path=self.sock) as r:
            t0 = time.perf_counter()
            for _ in range(n):
                r.ping()
            return (time.perf_counter() - t0) / n * 1e6

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def one_pair(
    args: argparse.Namespace, server: RedisServer, labd: PrivateLabd, case: Case, first: str
) -> dict[str, Any]:
    """One bare run and one labd run of ``case``, ``first`` first (or, ``--together``,
    both at once over the same window)."""
    n, warmup, seconds = args.counters, args.warmup, args.seconds
    if args.together:
        b, m = run_together(server.sock, labd, case, n, warmup, seconds)
    else:
        got: dict[str, Rate] = {}
        for side in (first, "labd" if first == "bare" else "bare"):
            if side == "bare":
                got[side] = run_bare(server.sock, case, n, warmup, seconds)
            else:
                got[side] = run_labd(labd, f"unix://{server.sock}", case, n, warmup, seconds)
        b, m = got["bare"], got["labd"]
    return {
        "bare": b.per_s,
        "labd": m.per_s,
        "bare_cpu_us": b.cpu_us,
        "labd_cpu_us": m.cpu_us,
        "first": "together" if args.together else first,
    }


def judge(label: str, pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """One case's figures over its pairs."""
    ratios = [p["labd"] / p["bare"] if p["bare"] else 0.0 for p in pairs]
    cpu = [p["bare_cpu_us"] / p["labd_cpu_us"] for p in pairs if p["labd_cpu_us"]]
    low, cover = median_lower_bound(ratios)
    verdict = at_least_verdict(ratios, TARGET)
    return {
        "case": label,
        "n": len(pairs),
        "pairs": pairs,
        "bare": statistics.median(p["bare"] for p in pairs),
        "labd": statistics.median(p["labd"] for p in pairs),
        "ratio": statistics.median(ratios),  # the median of the pairs' ratios
        "ratios": ratios,
        "lower_bound": low,
        "lower_bound_coverage": round(cover, 4),
        "verdict": verdict,
        "pairs_needed": pairs_needed(ratios, len(ratios), TARGET) if verdict == UNDECIDED else None,
        "bare_cpu_us": statistics.median(p["bare_cpu_us"] for p in pairs),
        "labd_cpu_us": statistics.median(p["labd_cpu_us"] for p in pairs),
        "cpu_ratio": statistics.median(cpu) if cpu else 0.0,  # bare / labd, per pair
    }


def measure(args: argparse.Namespace, server: RedisServer, labd: PrivateLabd) -> dict[str, Any]:
    cases = [c for c in CASES if not args.only or c.label in args.only or c.mechanism in args.only]
    out: dict[str, Any] = {"machine": machine(), "counters": args.counters, "cases": []}
    out["mode"] = "together" if args.together else "alternating"
    out["seed"] = args.seed
    pairs: dict[Case, list[dict[str, Any]]] = {case: [] for case in cases}
    plan = pair_schedule(cases, args.repeat, random.Random(args.seed), ("bare", "labd"))
    for i, (case, first) in enumerate(plan, 1):
        pair = one_pair(args, server, labd, case, first)
        pair["load"] = round(os.getloadavg()[0], 2)
        pairs[case].append(pair)
        print(
            f"  {i:>3}/{len(plan)} {case.label:<16} bare {pair['bare']:8.0f} labd "
            f"{pair['labd']:8.0f} -> {pair['labd'] / pair['bare'] if pair['bare'] else 0:.3f}"
            f" ({pair['first']} first, load {pair['load']:g})",
            file=sys.stderr,
            flush=True,
        )
    out["cases"] = [judge(case.label, pairs[case]) for case in cases]
    out["builtins"] = [
        {
            "case": c.label,
            "labd": run_labd(labd, None, c, args.counters, args.warmup, args.seconds).per_s,
        }
        for c in BUILTINS
    ]
    out["ping_us"] = server.ping_us()
    return out


def report(out: dict[str, Any]) -> None:
    m, n = out["machine"], out["counters"]
    source = (
        f"pooled from {len(out['sources'])} saved" if "sources" in out else f"seed {out['seed']}"
    )
    print(
        f"# {m['nproc']} cpus, Python {m['python']}, load {m['loadavg']}, {n} counters, "
        f"{out['mode']} runs, {source}"
    )
    print(
        f"{'case':16} {'bare/s':>8} {'labd/s':>8} {'ratio':>6} {'95%>=':>6} {'pairs':>5}"
        f" {'cpu ratio':>9}  verdict (pairs it would take)"
    )
    for c in out["cases"]:
        note = c["verdict"]
        if note == UNDECIDED:
            need = c["pairs_needed"]
            note += f" (~{need})" if need is not None else " (median on the target)"
        print(
            f"{c['case']:16} {c['bare']:8.0f} {c['labd']:8.0f} {c['ratio']:6.3f} "
            f"{c['lower_bound']:6.3f} {c['n']:5d} {c['cpu_ratio']:9.2f}  {note}"
        )
    print(
        "ratio = median over the pairs of labd / bare; 95%>= = the sign test's one-sided\n"
        "lower bound for it; cpu ratio = median over the pairs of bare / labd CPU per\n"
        f"increment; target: ratio >= {TARGET}"
    )
    if "ping_us" not in out:
        return
    print(f"\nbare PING round trip: {out['ping_us']:.1f} us")
    print(f"{'cost of one increment':24} {'us/increment/counter':>20}")
    for c in [*out["cases"], *out["builtins"]]:
        per = n / c["labd"] * 1e6 if c["labd"] else float("inf")
        print(f"{c['case']:24} {per:20.1f}")


def exit_code(out: dict[str, Any]) -> int:
    verdicts = {c["verdict"] for c in out["cases"]}
    return 1 if BELOW in verdicts else 0 if verdicts == {MET} else 3


def from_saved(files: list[str]) -> dict[str, Any]:
    """``--from``: the pairs of earlier ``--json`` runs, judged pooled, by case."""
    pairs: dict[str, list[dict[str, Any]]] = {}
    first: dict[str, Any] = {}
    for name in files:
        with open(name) as f:
            doc = json.load(f)
        first = first or doc
        for c in doc["cases"]:
            pairs.setdefault(c["case"], []).extend(c["pairs"])
    order = [c.label for c in CASES if c.label in pairs]
    return {
        "machine": first["machine"],
        "counters": first["counters"],
        "mode": first["mode"],
        "sources": files,
        "cases": [judge(label, pairs[label]) for label in order],
    }


def main() -> int:
    code = own_session(__file__, SESSION_FLAG)
    if code is not None:
        return code
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.5)
    ap.add_argument("--warmup", type=float, default=0.7)
    ap.add_argument("--repeat", type=int, default=10, help="bare/labd pairs per case (10)")
    ap.add_argument("--counters", type=int, default=2)
    ap.add_argument("--only", action="append", default=[])
    ap.add_argument("--json", action="store_true")
    add_options(ap)
    ap.add_argument(
        "--together",
        action="store_true",
        help="run both sides at once over the same windows (a shared, noisy host)",
    )
    args = ap.parse_args()
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")
    if args.sources:
        try:
            out = from_saved(args.sources)
        except (OSError, ValueError, KeyError) as e:
            sys.exit(f"redis_bench.py: --from: {e}")
    else:
        out = run(args)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        report(out)
    return exit_code(out)


def run(args: argparse.Namespace) -> dict[str, Any]:
    server = RedisServer()
    labd = PrivateLabd("ipl-bench-redis-labd")
    try:
        # in our session, as the bare loops are, and its workers at their priority
        labd.start(new_session=False, args=("--worker-nice", "0"))
        out = measure(args, server, labd)
    finally:
        labd.close()
        server.close()
    return out


if __name__ == "__main__":
    sys.exit(main())
