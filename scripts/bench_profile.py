"""py-spy sampling of one server process during chosen phases of a benchmark, and a top-N summary.

Used by scripts/bench_overhead.py (--profile PATH). py-spy is not a project dependency:
give its executable in env PY_SPY or have it on PATH, e.g.

    python3 -m venv /tmp/prof-venv && /tmp/prof-venv/bin/pip install py-spy
    PY_SPY=/tmp/prof-venv/bin/py-spy .venv/bin/python scripts/bench_overhead.py --mode chat --profile /tmp/bff.raw

Each profiled phase runs its own `py-spy record --pid <pid> --format raw --rate 200`; the
collapsed stacks of all phases are summed into PATH (flamegraph.pl and speedscope.app read it).
py-spy samples only threads that are running (no --idle), so an event loop waiting in epoll
adds nothing: the sample count divided by the rate is about the CPU time spent in Python.
py-spy pauses the target for each sample: latency figures of a profiled run are perturbed.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

from bench_processes import BenchError

RATE = 200
_LINE_NO = re.compile(r":\d+\)$")
# py-spy's idle detection does not work here (threads blocked on a lock and the event loop
# waiting in epoll are sampled as running), so stacks whose leaf is a wait are set apart.
IDLE_LEAVES = {
    "Condition.wait (threading.py)",  # Event.wait, Queue.get, the span exporters' sleeps
    "Runner.run (asyncio/runners.py)",  # uvloop's loop in C: waiting in epoll (or in libuv)
    "EpollSelector.select (selectors.py)",
    "_worker (concurrent/futures/thread.py)",  # an idle thread-pool worker
    "WorkerThread.run (anyio/_backends/_asyncio.py)",
}


def find_py_spy() -> str | None:
    """The py-spy executable from env PY_SPY, else from PATH."""
    configured = os.environ.get("PY_SPY")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    return shutil.which("py-spy")


class Profiler:
    """Samples `pid` with py-spy while inside `phase()`; `write()` merges the samples into `out`."""

    def __init__(self, executable: str, pid: int, out: Path, work_dir: Path, rate: int = RATE):
        self.executable, self.pid, self.out, self.rate = executable, pid, out, rate
        self._work_dir = work_dir
        self._parts: list[Path] = []
        self.stacks: Counter[str] = Counter()
        self.seconds = 0.0  # wall time sampled

    @contextlib.contextmanager
    def phase(self):  # type: ignore[no-untyped-def]
        part = self._work_dir / f"py-spy-{len(self._parts)}.raw"
        log_path = part.with_suffix(".log")
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [self.executable, "record", "--pid", str(self.pid), "--format", "raw", "--rate", str(self.rate),
                 "--output", str(part)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        started: float | None = None
        try:
            deadline = time.monotonic() + 10
            while b"Sampling process" not in log_path.read_bytes():  # attached
                if process.poll() is not None or time.monotonic() > deadline:
                    raise BenchError(f"py-spy did not start: {log_path.read_text(errors='replace')[-1500:]}")
                time.sleep(0.02)
            started = time.monotonic()
            yield
        finally:
            if started is not None:
                self.seconds += time.monotonic() - started
            if process.poll() is None:
                process.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if part.exists():
            self._parts.append(part)
            for line in part.read_text(errors="replace").splitlines():
                stack, _, count = line.rpartition(" ")
                if stack and count.isdigit():
                    self.stacks[stack] += int(count)

    def write(self) -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text("".join(f"{stack} {count}\n" for stack, count in self.stacks.items()))

    def summary(self, top: int = 25) -> str:
        return summarize(self.stacks, self.rate, self.seconds, top)


def _function(frame: str) -> str:
    """`func (file.py:123)` -> `func (file.py)`: lines of one function count together."""
    return _LINE_NO.sub(")", frame.strip())


def summarize(stacks: Counter[str], rate: int, seconds: float, top: int = 25) -> str:
    """The top functions by own samples (leaf frame) and by cumulative samples (anywhere on the stack)."""
    own: Counter[str] = Counter()
    cumulative: Counter[str] = Counter()
    idle = 0
    for stack, count in stacks.items():
        frames = [_function(frame) for frame in stack.split(";") if frame]
        if not frames:
            continue
        if frames[-1] in IDLE_LEAVES:
            idle += count
            continue
        own[frames[-1]] += count
        for frame in set(frames):
            cumulative[frame] += count
    total = sum(own.values())
    if not total:
        return f"  no busy samples ({idle} idle ones)"
    lines = [f"  {total} busy samples at {rate} Hz = {total / rate:.1f} s on CPU over {seconds:.1f} s sampled "
             f"({100 * total / rate / seconds if seconds else 0:.0f}% of one core; {idle} samples of waiting "
             f"threads left out: {', '.join(sorted(leaf.split()[0] for leaf in IDLE_LEAVES))})"]
    for title, counter in (("own time", own), ("cumulative time", cumulative)):
        lines.append(f"\n  top {top} by {title} (samples, % of all):")
        for frame, count in counter.most_common(top):
            lines.append(f"  {count:>7} {100 * count / total:5.1f}%  {frame[:150]}")
    return "\n".join(lines)
