"""Migrations: upgrading an empty database gives exactly the schema the models describe."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from newsletter.errors import StoreError
from newsletter.store import Store
from newsletter.store.models import Base
from tests.conftest import PG_ENV


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with nothing in it: a new SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    admin_url = os.environ.get(PG_ENV)
    if not admin_url:
        pytest.skip(f"PostgreSQL tests need ${PG_ENV}")
    name = f"newsletter_migrations_{os.getpid()}_{secrets.token_hex(3)}"
    admin = create_engine(make_url(admin_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _ours(name: str | None, type_: str, parent_names: dict[str, Any]) -> bool:
    """Alembic's own table and the scheduler's job store are not part of the models."""
    return not (type_ == "table" and name is not None and (name == "alembic_version" or name.startswith("apscheduler")))


def schema_differences(store: Store) -> list[Any]:
    with store.engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={"compare_type": True, "compare_server_default": False, "include_name": _ours},
        )
        return compare_metadata(context, Base.metadata)


def test_upgrading_an_empty_database_gives_the_models_schema(empty_url: str) -> None:
    store = Store(empty_url)
    try:
        with pytest.raises(StoreError, match="is empty; run `newsletter db upgrade` first"):
            store.check_schema()
        revision = store.upgrade()
        assert revision == store.head_revision() == store.current_revision()
        store.check_schema()
        assert schema_differences(store) == []
        tables = set(inspect(store.engine).get_table_names())
        assert set(Base.metadata.tables) <= tables
    finally:
        store.dispose()


def test_upgrading_twice_changes_nothing(empty_url: str) -> None:
    store = Store(empty_url)
    try:
        first = store.upgrade()
        with store.engine.connect() as conn:
            before = {t: [c["name"] for c in inspect(conn).get_columns(t)] for t in inspect(conn).get_table_names()}
        assert store.upgrade() == first
        with store.engine.connect() as conn:
            after = {t: [c["name"] for c in inspect(conn).get_columns(t)] for t in inspect(conn).get_table_names()}
        assert before == after
        assert schema_differences(store) == []
    finally:
        store.dispose()


def test_the_suites_databases_match_the_models(db_url: str) -> None:
    store = Store(db_url)
    try:
        assert schema_differences(store) == []
    finally:
        store.dispose()


def test_the_history_has_one_head(tmp_path: Path) -> None:
    """Two heads would make `alembic heads` and `status` show two schema versions."""
    store = Store(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        assert "," not in store.head_revision()
        store.upgrade()
        assert store.current_revision() == store.head_revision()
    finally:
        store.dispose()


def _migrate(store: Store, change: Any, revision: str) -> None:
    from alembic import command

    cfg = store._alembic()
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        getattr(command, change)(cfg, revision)


def test_migration_0012_gives_every_reader_no_zone_and_goes_back(empty_url: str) -> None:
    """Existing readers get "" (the newsroom's zone); SQLite keeps AUTOINCREMENT both ways."""
    store = Store(empty_url)
    try:
        _migrate(store, "upgrade", "0011")
        insert = text(
            "INSERT INTO subscribers (email, name, status, source, created_at, updated_at) "
            "VALUES ('ana@example.org', '', 'active', '', :at, :at)"
        )
        with store.engine.begin() as conn:
            conn.execute(insert, {"at": "2026-11-24 06:30:00"})
        store.upgrade()
        assert schema_differences(store) == []
        with store.engine.connect() as conn:
            assert conn.execute(text("SELECT timezone FROM subscribers")).all() == [("",)]
        indexes = {i["name"]: i["column_names"] for i in inspect(store.engine).get_indexes("subscribers")}
        assert indexes["ix_subscribers_status_timezone"] == ["status", "timezone", "id"]
        _migrate(store, "downgrade", "0011")
        assert "timezone" not in {c["name"] for c in inspect(store.engine).get_columns("subscribers")}
        store.upgrade()
        assert schema_differences(store) == []
        with store.engine.connect() as conn:
            assert conn.execute(text("SELECT email, timezone FROM subscribers")).all() == [("ana@example.org", "")]
            if conn.dialect.name == "sqlite":  # ids are signed into links: never reused
                ddl = conn.execute(text("SELECT sql FROM sqlite_master WHERE name = 'subscribers'")).scalar()
                assert "AUTOINCREMENT" in ddl
    finally:
        store.dispose()


def test_migration_0016_fills_the_click_rollups_from_the_clicks_recorded_before(empty_url: str) -> None:
    """Each edition's and each link's figures, as a count of the raw rows gives them; and back again."""
    store = Store(empty_url)
    try:
        _migrate(store, "upgrade", "0015")
        # (edition, position, reader): duplicates, anonymous clicks and opens (position 0), an edition of opens only.
        clicks = [(1, 1, 10), (1, 1, 10), (1, 2, 10), (1, 2, 11), (1, 1, None), (1, 0, 10), (1, 0, 10)]
        clicks += [(1, 0, 12), (1, 0, None), (2, 0, 10), (3, 3, None)]
        insert = text(
            "INSERT INTO clicks (edition_id, position, subscriber_id, at) VALUES (:edition, :position, :reader, :at)"
        )
        with store.engine.begin() as conn:
            conn.execute(
                insert, [{"edition": e, "position": p, "reader": s, "at": "2026-11-24 07:00:00"} for e, p, s in clicks]
            )
        store.upgrade()
        assert schema_differences(store) == []
        by_edition = "SELECT edition_id, clickers, clicks, openers FROM clicks_by_edition ORDER BY edition_id"
        by_link = "SELECT edition_id, position, readers, clicks FROM clicks_by_link ORDER BY edition_id, position"
        expected_editions = [(1, 2, 5, 2), (2, 0, 0, 1), (3, 0, 1, 0)]
        expected_links = [(1, 1, 1, 3), (1, 2, 2, 2), (3, 3, 0, 1)]
        with store.engine.connect() as conn:
            assert [tuple(r) for r in conn.execute(text(by_edition))] == expected_editions
            assert [tuple(r) for r in conn.execute(text(by_link))] == expected_links
        _migrate(store, "downgrade", "0015")
        tables = set(inspect(store.engine).get_table_names())
        assert not {"clicks_by_edition", "clicks_by_link"} & tables
        indexes = {i["name"]: i["column_names"] for i in inspect(store.engine).get_indexes("clicks")}
        assert indexes["ix_clicks_subscriber_id"] == ["subscriber_id"]
        store.upgrade()
        assert schema_differences(store) == []
        with store.engine.connect() as conn:
            assert [tuple(r) for r in conn.execute(text(by_edition))] == expected_editions
            assert [tuple(r) for r in conn.execute(text(by_link))] == expected_links
    finally:
        store.dispose()
