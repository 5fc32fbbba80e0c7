"""A throwaway PostgreSQL server for tests: initdb in a temp dir, started on a free localhost port.

Debian's `postgresql` package provides the binaries; as root, the server runs as the `postgres` user (it
refuses root). Anything missing gives a skip reason instead of a server."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def postgres_server() -> Iterator[tuple[str | None, str]]:
    """Yields (url, reason): a SQLAlchemy URL of a fresh database, or None and why there is none."""
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    if not initdb or not pg_ctl:
        yield None, "no PostgreSQL server binaries (Debian: apt-get install postgresql)"
        return
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        yield None, "no PostgreSQL driver (pip install psycopg2-binary)"
        return
    prefix: list[str] = []
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            yield None, "running as root and there is no 'postgres' user to run the server as"
            return
        prefix = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="gradwise-pg-"))
    data, port = root / "data", _free_port()
    if prefix:
        shutil.chown(root, "postgres")
    try:
        run = lambda *cmd: subprocess.run([*prefix, *cmd], capture_output=True, text=True, timeout=120)  # noqa: E731
        r = run(initdb, "-D", str(data), "-A", "trust", "-U", "gradwise", "--no-sync")
        if r.returncode != 0:
            yield None, f"initdb failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}"
            return
        r = run(pg_ctl, "-D", str(data), "-l", str(root / "log"), "-w", "-o",
                f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        if r.returncode != 0:
            yield None, f"the server did not start: {(root / 'log').read_text()[-300:] if (root / 'log').exists() else r.stderr}"
            return
        try:
            import psycopg2

            conn = psycopg2.connect(host="127.0.0.1", port=port, user="gradwise", dbname="postgres")
            conn.autocommit = True
            conn.cursor().execute("CREATE DATABASE gradwise_test")
            conn.close()
            yield f"postgresql+psycopg2://gradwise@127.0.0.1:{port}/gradwise_test", ""
        finally:
            run(pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)
