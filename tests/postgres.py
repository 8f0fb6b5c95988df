"""A throwaway PostgreSQL server for the tests: the ``postgres_url`` fixture.

Debian's ``postgresql`` package provides the binaries (``.ci/run`` installs it); when none are found
the tests that need a server are skipped with a message saying so.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SUPERUSER = "mlc"  # the cluster's superuser (initdb -U), whatever OS user runs the server
DATABASE = "mlc"
UNPRIVILEGED = "nobody"  # who runs the server when the tests run as root (every Debian system has it)
# Settings for speed (nothing here has to survive a crash) and a small footprint.
SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off", "shared_buffers": "32MB",
            "max_connections": "100", "max_wal_size": "64MB", "logging_collector": "off"}
_DATABASES = itertools.count()  # numbers the databases of ``create_database``


def postgres_bin() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``: from PATH, else Debian's ``/usr/lib/postgresql/*/bin``."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl", path=str(Path(found).resolve().parent)):
        return Path(found).resolve().parent
    for directory in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version, reverse=True):
        if (Path(directory) / "initdb").is_file() and (Path(directory) / "pg_ctl").is_file():
            return Path(directory)
    return None


def _version(directory: str) -> tuple[int, ...]:
    version = Path(directory).parent.name
    return tuple(int(p) for p in version.split(".") if p.isdigit())


def reachable(directory: str) -> bool:
    """Whether any user can reach into ``directory`` (o+x on it and every parent)."""
    path = Path(directory).resolve()
    return all(p.stat().st_mode & 0o001 for p in (path, *path.parents))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def create_database(server_url: str, name: str, numbered: bool = True) -> str:
    """Create a database ``name`` (``<name>_<n>``, new each time, if ``numbered``) on the server of
    ``server_url`` (any of its databases); the new database's URL."""
    import psycopg
    from sqlalchemy.engine import make_url

    url, name = make_url(server_url), f"{name}_{next(_DATABASES)}" if numbered else name
    with psycopg.connect(host=url.host, port=url.port, user=url.username, dbname="postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.set(database=name).render_as_string(hide_password=False)


class PostgresServer:
    """A PostgreSQL cluster in ``root`` (a fresh temporary directory), on 127.0.0.1:``port`` only.

    PostgreSQL refuses to run as root (``initdb``/``pg_ctl``: "cannot be run as root"). When the tests
    run as root (CI in a fresh Debian container), every server command runs as the unprivileged
    ``nobody`` user: the directory is made with ``tempfile.mkdtemp`` directly in the temp dir (``/tmp``
    if ``$TMPDIR`` is closed to others; not under pytest's ``/tmp/pytest-of-root``, which is 0700) and
    handed to ``nobody``, and ``subprocess`` switches user, group and supplementary groups
    (``user=``/``group=``/``extra_groups=``: setuid in the child, no ``su``/``runuser`` and no
    PAM involved, so it works in a bare container). Otherwise the server runs as the current user.
    Authentication is ``trust`` (any role, no password) on loopback and on the Unix socket, which
    lives inside ``root``; the cluster's superuser is ``mlc`` either way.
    """

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.as_root = os.geteuid() == 0
        self.root = Path(tempfile.mkdtemp(prefix="mlc-postgres-", dir=None if reachable(tempfile.gettempdir())
                                          else "/tmp"))
        self.data, self.log = self.root / "data", self.root / "server.log"
        self.port = 0
        self.user: dict = {}
        if self.as_root:
            nobody = pwd.getpwnam(UNPRIVILEGED)
            os.chown(self.root, nobody.pw_uid, nobody.pw_gid)
            self.user = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        # pg_ctl's log goes to a file, so its server never holds the pipes that capture_output waits on.
        result = subprocess.run([str(self.bin / args[0]), *args[1:]], cwd=self.root, capture_output=True, text=True,
                                timeout=timeout, env=os.environ | {"LC_ALL": "C", "TZ": "UTC"}, **self.user)
        if result.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.is_file() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed ({result.returncode}):\n{result.stdout[-2000:]}"
                               f"{result.stderr[-2000:]}\n{log}")
        return result

    def start(self) -> str:
        """initdb, then pg_ctl start (retried on another port if the free one was taken meanwhile); the URL."""
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "--no-locale", "-E", "UTF8",
                  "--no-sync")
        for attempt in range(3):
            self.port = free_port()
            settings = SETTINGS | {"listen_addresses": "'127.0.0.1'", "port": str(self.port),
                                   "unix_socket_directories": f"'{self.root}'"}
            with (self.data / "postgresql.conf").open("a") as conf:  # the last setting of a name wins
                conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
            try:
                self._run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "30")
                break
            except RuntimeError:
                if attempt == 2 or "could not bind" not in (self.log.read_text() if self.log.is_file() else ""):
                    raise
        return create_database(f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres", DATABASE, numbered=False)

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").is_file():
                self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w", "-t", "30")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """``postgresql://mlc@127.0.0.1:<port>/mlc``: a database on a PostgreSQL server started for this session
    (see ``PostgresServer``); stopped and deleted at the end. Skips when no PostgreSQL is installed."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) on PATH or in /usr/lib/postgresql/*/bin; "
                    "install Debian's postgresql package (.ci/run does) to run the PostgreSQL tests")
    server = PostgresServer(bin_dir)
    started = time.monotonic()
    try:
        url = server.start()
    except BaseException:
        server.stop()
        raise
    print(f"\nPostgreSQL {bin_dir.parent.name} up on 127.0.0.1:{server.port} in {time.monotonic() - started:.1f} s")
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture
def postgres_db(postgres_url, request) -> str:
    """A new, empty database on the session's server, for one test (no schema, no study yet)."""
    return create_database(postgres_url, "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:50])
