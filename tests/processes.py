"""Several real gateway processes sharing one database (and Redis): the scale-out tests.

Each :class:`GatewayProcess` is ``sample_app`` served by gunicorn (one gevent worker by default,
or gthread), as ``make run`` serves it, on its own port, configured only through the environment.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class GatewayProcess:
    """One gunicorn-served gateway; ``url`` is its base URL. Stop it with :meth:`stop`."""

    def __init__(
        self,
        env: Mapping[str, str],
        instance_path: Path,
        threads: int = 16,
        workers: int = 1,
        worker_class: str = "gevent",
        *,
        make_run: bool = False,
        process_group: bool = False,
    ) -> None:
        """``make_run``: serve with ``sample_app/gunicorn.conf.py`` exactly as ``make run``
        does (its settings, hooks and worker class; ``WORKERS`` = ``workers``) instead of
        gunicorn's defaults and the arguments given here. ``process_group``: gunicorn and its
        workers in a process group of their own, which :meth:`signal_group` signals as a
        terminal's Ctrl-C does (the test runner is not in it)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AIGATEWAY_")},
            "INSTANCE_PATH": str(instance_path),
            "PYTHONPATH": str(ROOT),
            **env,
        }
        self.log_path = instance_path / f"gunicorn-{self.port}.log"
        instance_path.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")  # noqa: SIM115  (closed in stop())
        if make_run:
            # As `make run` serves it: sample_app/gunicorn.conf.py, settings from the
            # environment (WORKERS, WORKER_CLASS… given in ``env``).
            full_env.update(HOST="127.0.0.1", PORT=str(self.port))
            full_env.setdefault("WORKERS", str(workers))
            command = ["--config", "sample_app/gunicorn.conf.py"]
        else:
            command = [
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                str(workers),
                "--worker-class",
                worker_class,
                *(("--threads", str(threads)) if worker_class == "gthread" else ()),
                "--graceful-timeout",
                "5",
                "sample_app:create_app()",
            ]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", *command],
            cwd=ROOT,
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=process_group,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited early:\n{self.log_path.read_text()}")
            try:
                if requests.get(self.url + "/v1/health", timeout=1).status_code == 200:
                    return
            except (requests.ConnectionError, requests.Timeout):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"gateway not ready in {timeout} s:\n{self.log_path.read_text()}")

    def worker_pids(self) -> list[int]:
        """The process ids of gunicorn's workers (the master's children; Linux ``/proc``)."""
        pid = self.process.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return sorted(int(child) for child in children)

    def signal_group(self, signum: int) -> None:
        """Send ``signum`` to the master and every worker at once (``process_group=True``)."""
        os.killpg(self.process.pid, signum)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until the gateway answers ``/v1/health`` again (e.g. a worker respawned)."""
        self._wait_ready(timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
