"""Runs real servers for tests: ASGI apps in a background thread, or processes."""

import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{what} not ready within {timeout:.0f} s")


class ThreadServer:
    """uvicorn serving an ASGI app on 127.0.0.1 in a daemon thread."""

    def __init__(
        self,
        app: ASGIApp,
        port: int | None = None,
        root_path: str = "",
        keepalive_seconds: float = 5,
        options: Mapping[str, Any] | None = None,
    ):
        """`options`: uvicorn's settings instead of root_path/keepalive_seconds (a BFF: bff.serving.uvicorn_options)."""
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        settings = dict(options) if options is not None else {"root_path": root_path, "timeout_keep_alive": keepalive_seconds}
        config = uvicorn.Config(app, **{**settings, "host": "127.0.0.1", "port": self.port, "log_level": "warning", "lifespan": "on"})
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> "ThreadServer":
        self._thread.start()
        wait_until(lambda: self._server.started, 15, f"server on {self.url}")
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


class ProcessServer:
    """A child process with its output in a log file; stopped with SIGTERM, then SIGKILL."""

    stop_seconds = 15.0

    def __init__(
        self, args: list[str], env: dict[str, str], log_path: Path, base_env: Mapping[str, str] = os.environ, cwd: Path | None = None
    ):
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(args, env={**base_env, **env}, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=self.stop_seconds)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        self._log.close()


def strip_prefix(prefix: str, app: ASGIApp) -> ASGIApp:
    """What Kong does in front of the BFF: /gateway/x reaches the BFF as /x; anything else is not the BFF's."""

    async def proxy(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if not path.startswith(prefix + "/"):
                await PlainTextResponse("not behind the prefix", status_code=404)(scope, receive, send)
                return
            scope = {**scope, "path": path[len(prefix) :], "raw_path": path[len(prefix) :].encode()}
        await app(scope, receive, send)

    return proxy
