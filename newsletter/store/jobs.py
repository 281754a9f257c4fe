"""APScheduler's job table in the newsletter's own database: made once, and read back for ``status``.

The scheduler daemon keeps its jobs in the same database as everything else, so a restart
keeps the schedule. APScheduler defines the table and writes its rows; the newsletter
only creates it ahead of the daemons that share it, and reads a job's next run time as
APScheduler stored it (seconds since the epoch, UTC).
"""

from __future__ import annotations

from datetime import UTC, datetime

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from sqlalchemy import Engine, Table, inspect, select
from sqlalchemy.exc import SQLAlchemyError


def ensure_job_table(engine: Engine, table: Table) -> None:
    """Create APScheduler's table before two schedulers starting together both try to.

    The loser of that race gets an error from its CREATE although the table is there: it
    is raised only when the table really is missing.
    """
    try:
        table.create(engine, checkfirst=True)
    except SQLAlchemyError:
        if not inspect(engine).has_table(table.name):
            raise


def job_next_run(engine: Engine, tablename: str, job_id: str) -> datetime | None:
    """The next run time the job table holds for ``job_id``; None when no daemon has made the table,
    or it holds no next run for that job."""
    if not inspect(engine).has_table(tablename):
        return None
    table = SQLAlchemyJobStore(engine=engine, tablename=tablename).jobs_t
    with engine.connect() as conn:
        value = conn.execute(select(table.c.next_run_time).where(table.c.id == job_id)).scalar()
    return None if value is None else datetime.fromtimestamp(value, UTC)


__all__ = ["ensure_job_table", "job_next_run"]
