"""Alembic environment: migrations run on the connection the Store hands over."""

from alembic import context
from sqlalchemy import Connection, create_engine

from newsletter.store.models import Base

target_metadata = Base.metadata


def run() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:  # invoked by the alembic command line
        url = context.config.get_main_option("sqlalchemy.url")
        engine = create_engine(url)  # type: ignore[arg-type]  # no URL in the .ini: create_engine refuses None
        with engine.begin() as connection:
            _migrate(connection)
    else:
        _migrate(connection)


def _migrate(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run()
