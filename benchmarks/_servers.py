"""Local servers for the server-backed peers, on 127.0.0.1 only, in temp dirs, stopped after.

- PostgreSQL (Debian's ``postgresql`` package): ``initdb`` + ``pg_ctl start`` on a free port;
  run as the ``postgres`` user when we are root (initdb refuses root). Defaults kept:
  ``fsync=on``, ``synchronous_commit=on``, ``full_page_writes=on``.
- Redis (Debian's ``redis-server``): ``appendonly yes``, ``appendfsync always``, no RDB snapshots.

Each ``start_*`` returns a handle with ``.url`` and ``.stop()``, or raises ``ServerUnavailable``
with a message saying what is missing.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from _util import rmtree, work_dir


class ServerUnavailable(Exception):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def _pg_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]))
    return Path(dirs[-1]) if dirs else None


class Postgres:
    def __init__(self) -> None:
        bindir = _pg_bin()
        if bindir is None or not (bindir / "initdb").exists():
            raise ServerUnavailable("PostgreSQL is not installed (apt-get install postgresql)")
        self.bindir = bindir
        self.root = work_dir("pg")
        self.data = self.root / "data"
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.version = ""
        self.started = False

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)

    def start(self) -> Postgres:
        if self.as_root:
            try:
                shutil.chown(self.root, "postgres", "postgres")
            except (LookupError, PermissionError) as exc:
                raise ServerUnavailable(
                    f"cannot hand the data dir to user postgres: {exc}") from exc
            os.chmod(self.root, 0o755)
        r = self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
                      "--auth=trust", "-E", "UTF8", "--no-sync")
        if r.returncode != 0:
            raise ServerUnavailable(f"initdb failed: {r.stderr.strip()[-500:]}")
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} "
                f"-c fsync=on -c synchronous_commit=on -c max_connections=200")
        r = self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l",
                      str(self.root / "log"), "-o", opts, "-w", "-t", "60", "start")
        if r.returncode != 0:
            log = (self.root / "log").read_text(errors="replace")[-800:] \
                if (self.root / "log").exists() else ""
            raise ServerUnavailable(f"pg_ctl start failed: {r.stderr.strip()[-300:]} {log}")
        self.started = True
        if not _wait_port(self.port, 30):
            self.stop()
            raise ServerUnavailable("PostgreSQL did not open its port")
        v = subprocess.run([str(self.bindir / "postgres"), "--version"], capture_output=True,
                           text=True)
        self.version = v.stdout.strip()
        return self

    def stop(self) -> None:
        if self.started:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w",
                      "stop")
            self.started = False
        rmtree(self.root)


class Redis:
    def __init__(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise ServerUnavailable("redis-server is not installed (apt-get install redis-server)")
        self.exe = exe
        self.root = work_dir("redis")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.version = ""

    def start(self) -> Redis:
        v = subprocess.run([self.exe, "--version"], capture_output=True, text=True)
        self.version = v.stdout.strip()
        self.proc = subprocess.Popen(
            [self.exe, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.root),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "",
             "--protected-mode", "yes", "--daemonize", "no", "--logfile",
             str(self.root / "log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        if not _wait_port(self.port, 15):
            self.stop()
            raise ServerUnavailable("redis-server did not open its port")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        rmtree(self.root)
