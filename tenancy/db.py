"""`tenancy db apply DSN`: applies the tenancy SQL (sql/*.sql, in name order) in one transaction, and with `--as NAME`
what the platform's SQL job applies after it (tenancy/registration.py) in that same transaction."""

from __future__ import annotations

from pathlib import Path

from tenancy.errors import TenancyError

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"


class DatabaseError(TenancyError):
    exit_code = 1


def describe_dsn(dsn: str) -> str:
    """A DSN as it may be printed: host, port, database and user; never the password."""
    try:
        from psycopg.conninfo import conninfo_to_dict
        parts = conninfo_to_dict(dsn)
    except Exception:  # noqa: BLE001 -- a malformed DSN is described, not echoed (it may contain a password)
        return "(a malformed DSN)"
    shown = [f"{k}={parts[k]}" for k in ("host", "port", "dbname", "user") if parts.get(k)]
    return "'" + " ".join(shown) + "'" if shown else "(the default database)"


def sql_files(directory: Path = SQL_DIR) -> list[Path]:
    return sorted(directory.glob("*.sql"))


def apply(dsn: str, directory: Path = SQL_DIR, progress=None, then: tuple[str, str] | None = None) -> list[str]:
    """Apply every SQL file, then `then` ((a name to show, SQL text)) when given; all or nothing. Returns the names
    applied."""
    import psycopg

    files = sql_files(directory)
    if not files:
        raise DatabaseError(f"no .sql files in {directory}")
    say = progress or (lambda m: None)
    try:
        with psycopg.connect(dsn, autocommit=False) as conn:
            with conn.transaction():
                for f in files:
                    say(f"applying {f.name}")
                    conn.execute(f.read_text())
                if then is not None:
                    say(f"applying {then[0]}")
                    conn.execute(then[1])
            problems = [r[0] for r in conn.execute("SELECT problem FROM tenancy.audit()").fetchall()]
    except psycopg.Error as exc:
        raise DatabaseError(f"applying the tenancy SQL failed (nothing was changed): {exc}".strip()) from None
    if problems:
        raise DatabaseError("the tenancy SQL applied, but the isolation audit found problems:\n  " + "\n  ".join(problems))
    return [f.name for f in files] + ([then[0]] if then is not None else [])
