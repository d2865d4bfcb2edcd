"""A private PostgreSQL for tests and benchmarks: its own data directory in /tmp, its own port and
Unix socket directory, trust authentication, stopped (`pg_ctl stop -m fast`) and removed however the
run ends. Debian's packages (postgresql-15) put the server in /usr/lib/postgresql/N/bin; PG_BIN
overrides. initdb refuses root, so as root the server runs as the `postgres` user."""
import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCHEMA = os.path.join(ROOT, "Examples/todo/schema.sql")


def pg_bin():
    if os.environ.get("PG_BIN"):
        return os.environ["PG_BIN"]
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise RuntimeError("PostgreSQL is not installed (Debian: apt-get install postgresql-15; ./scripts/deps.sh test)")
    return os.path.dirname(found[-1])


def free_tcp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    def __init__(self, database="todo"):
        self.bin = pg_bin()
        self.database = database
        self.dir = tempfile.mkdtemp(prefix="pg-", dir="/tmp")
        self.data = os.path.join(self.dir, "data")
        self.socket_dir = self.dir
        self.log_path = os.path.join(self.dir, "postgres.log")
        self.port = free_tcp_port()
        self.as_user = []
        self.started = False
        if os.geteuid() == 0:
            pwd.getpwnam("postgres")  # KeyError: the package creates this user
            shutil.chown(self.dir, "postgres", "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]

    @property
    def url(self):
        """DATABASE_URL over TCP."""
        return f"postgres://postgres@127.0.0.1:{self.port}/{self.database}"

    @property
    def socket_url(self):
        """DATABASE_URL over the Unix socket."""
        return f"postgres://postgres@/{self.database}?host={self.socket_dir}&port={self.port}"

    def run(self, args, **kw):
        return subprocess.run(self.as_user + args, check=True, capture_output=True, text=True, timeout=kw.pop("timeout", 60), **kw)

    def start(self):
        self.run([f"{self.bin}/initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync", "--no-instructions"])
        options = (f"-k {self.socket_dir} -p {self.port} -c listen_addresses=127.0.0.1 -c max_connections=300"
                   " -c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        self.started = True
        self.run([f"{self.bin}/pg_ctl", "-D", self.data, "-l", self.log_path, "-w", "-t", "60", "-o", options, "start"])
        self.psql("CREATE DATABASE " + self.database, database="postgres")
        self.psql_file(SCHEMA)
        return self

    def psql_args(self, database=None):
        return [f"{self.bin}/psql", "-h", self.socket_dir, "-p", str(self.port), "-U", "postgres",
                "-d", database or self.database, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]

    def psql(self, sql, database=None):
        """Runs SQL; returns the rows as lists of strings (unaligned, `|`-separated output)."""
        r = subprocess.run(self.psql_args(database) + ["-c", sql], check=True, capture_output=True, text=True, timeout=60)
        return [line.split("|") for line in r.stdout.splitlines() if line]

    def psql_file(self, path):
        subprocess.run(self.psql_args() + ["-f", path], check=True, capture_output=True, text=True, timeout=60)

    def stop(self):
        try:
            if self.started:
                subprocess.run(self.as_user + [f"{self.bin}/pg_ctl", "-D", self.data, "-m", "fast", "-w", "-t", "30", "stop"],
                               capture_output=True, timeout=60)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def running_postgres(database="todo"):
    """A started PostgreSQL with `schema.sql` applied to `database`; stopped and removed on exit."""
    pg = Postgres(database)
    try:
        yield pg.start()
    finally:
        pg.stop()
