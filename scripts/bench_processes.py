"""What the benchmark scripts share: their server processes, readiness polling, tokens.

Imported by scripts/bench_*.py, which run as `python scripts/bench_x.py` (scripts/ on sys.path).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import httpx
from jose import jwt

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """Something the benchmark cannot recover from (exit status 1)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_environment() -> dict[str, str]:
    """Only what a process needs, plus the venv and tool paths: no setting of this machine's shell reaches the servers."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
    return {name: os.environ[name] for name in keep if name in os.environ}


class Child:
    """A server process in its own session (Ctrl-C reaches only us), output to a log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            args,
            env={**base_environment(), **env},
            cwd=ROOT,  # config/ paths resolve as in the image
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() ends any workers it spawns too
        )
        self.pid = self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def log_count(self, needle: str) -> int:
        with self.log_path.open(errors="replace") as log:
            return sum(needle in line for line in log)

    def cpu_seconds(self) -> float:
        """User + system CPU time of every live process in this child's process group."""
        total = 0
        for pid in self.group_pids():
            with contextlib.suppress(OSError):  # exited meanwhile
                stat = Path(f"/proc/{pid}/stat").read_text()
                fields = stat[stat.rindex(")") + 2 :].split()  # fields from #3 (state) on
                total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / CLK_TCK

    def main_thread_cpu_seconds(self) -> float:
        """User + system CPU time of the child's main thread (for the BFF: its event loop)."""
        stat = Path(f"/proc/{self.pid}/task/{self.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def group_pids(self) -> list[int]:
        """Every live process of this child's process group (the child and any workers it spawned)."""
        pids = []
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[2]) == self.pid:
                pids.append(int(entry.name))
        return pids

    def group_rss_kib(self) -> int:
        """Resident memory of the whole process group now (shared pages counted in each process)."""
        total = 0
        for pid in self.group_pids():
            with contextlib.suppress(OSError):
                total += memory_kib(pid).get("VmRSS", 0)
        return total

    def memory_kib(self) -> dict[str, int]:
        """Resident memory of the child's main process now (VmRSS) and at its peak (VmHWM), in KiB."""
        return memory_kib(self.pid)

    def stop(self) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)  # stragglers of the group, if any
        self._log.close()


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of one process from /proc/<pid>/status, in KiB."""
    figures = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            figures[name] = int(value.split()[0])
    return figures


def wait_ready(child: Child, url: str, timeout: float) -> None:
    """Polls `url` until it answers 200; fails early when the process dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise BenchError(f"{child.name} exited with status {child.process.returncode}:\n{child.log_tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        time.sleep(0.2)
    raise BenchError(f"{child.name} not ready within {timeout:.0f} s ({url}):\n{child.log_tail()}")


def session_token(user_id: str, secret: str, lifetime: int = 12 * 3600) -> str:
    """An Open-WebUI-format session token, as scripts/dev_token.py mints it."""
    now = int(time.time())
    claims = {
        "id": user_id,
        "typ": "session",
        "auth_method": "password",
        "auth_time": now,
        "mfa_verified": False,
        "exp": now + lifetime,
        "jti": str(uuid.uuid4()),
        "iat": now,
    }
    return jwt.encode(claims, secret, algorithm="HS256")
