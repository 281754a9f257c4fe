"""Persistence: models, the Store (engine, sessions, migrations) and named queries."""

from newsletter.store.database import Store, worker_identity

__all__ = ["Store", "worker_identity"]
