"""The database schema as typed SQLAlchemy 2 models; Alembic migrations mirror it exactly.

Datetimes are always timezone-aware in Python and stored as UTC: SQLite has no time zone
type, and mixing naive and aware values is how a send ends up an hour early in March.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Dialect,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """An aware datetime in Python, UTC in the database, on SQLite and PostgreSQL alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass an aware datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # raw SQL on SQLite hands back text
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda members: [m.value for m in members],
    )


class SubscriberStatus(enum.StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"


class EditionStatus(enum.StrEnum):
    READY = "ready"  # selected and rendered, nothing sent yet
    SENDING = "sending"  # deliveries exist; some are pending or deferred
    SENT = "sent"  # every delivery is sent, failed or skipped
    SKIPPED = "skipped"  # no articles in the window: nothing to send


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    SENDING = "sending"  # claimed by a worker: in flight until the lease ends
    SENT = "sent"
    DEFERRED = "deferred"  # temporary failures used up this run's attempts
    FAILED = "failed"  # permanent failure, recorded with the server's reply
    SKIPPED = "skipped"  # the subscriber left or bounced before their turn


# --- values of the delivery log, as the send loop and its failure policy see them ---------------


@dataclass(frozen=True)
class Work:
    """A claimed delivery with what is needed to address it."""

    delivery_id: int
    subscriber_id: int
    email: str
    name: str
    attempts: int


@dataclass(frozen=True)
class Result:
    """What happened to one claimed delivery, to be written in the next transaction."""

    delivery_id: int
    subscriber_id: int
    status: DeliveryStatus  # SENT, FAILED, DEFERRED or PENDING (released unsent)
    attempts: int = 0  # tries made in this run
    error: str = ""
    bounced: bool = False


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Article(Base):
    __tablename__ = "articles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    guid: Mapped[str] = mapped_column(String(1024), unique=True)
    url: Mapped[str] = mapped_column(String(2048))
    title: Mapped[str] = mapped_column(String(500))
    standfirst: Mapped[str] = mapped_column(Text, default="")
    body: Mapped[str] = mapped_column(Text, default="")
    image_url: Mapped[str] = mapped_column(String(2048), default="")
    image_alt: Mapped[str] = mapped_column(String(500), default="")
    image_caption: Mapped[str] = mapped_column(Text, default="")
    author: Mapped[str] = mapped_column(String(200), default="")
    section: Mapped[str] = mapped_column(String(100), default="")
    issue_number: Mapped[str] = mapped_column(String(50), default="")
    published_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    # Editors' say: a hidden story goes in no edition not yet made; within a section higher
    # priority comes first; a story pinned for a date leads that date's edition.
    hidden: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    pinned_for: Mapped[date | None] = mapped_column(Date, index=True)
    # Fields an editor changed by hand (comma-separated): a feed's next fetch leaves them alone.
    edited_fields: Mapped[str] = mapped_column(String(200), default="", server_default=text("''"))
    # An article belongs to at most one edition by construction: one column, not a join table.
    edition_id: Mapped[int | None] = mapped_column(ForeignKey("editions.id", ondelete="SET NULL"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    edition: Mapped[Edition | None] = relationship(back_populates="articles")


class Subscriber(Base):
    __tablename__ = "subscribers"
    # AUTOINCREMENT: ids are signed into unsubscribe links, so SQLite must never reuse one.
    __table_args__ = (
        # The list's history by day (``store.reports.list_growth``): rows that joined,
        # confirmed or left in a window of days, read by range instead of by a whole scan.
        Index("ix_subscribers_created_at", "created_at"),
        Index("ix_subscribers_confirmed_at", "confirmed_at"),
        # Who left, by when, with whether they had confirmed: partial, so only the rows of
        # readers who left are in them, and a reader's other changes never touch them.
        Index(
            "ix_subscribers_unsubscribed",
            "unsubscribed_at",
            "confirmed_at",
            sqlite_where=text("status = 'unsubscribed'"),
            postgresql_where=text("status = 'unsubscribed'"),
        ),
        Index(
            "ix_subscribers_bounced",
            "updated_at",
            "confirmed_at",
            "id",
            sqlite_where=text("status = 'bounced'"),
            postgresql_where=text("status = 'bounced'"),
        ),
        # Active readers grouped by their zone (a count per zone, each zone's deliveries made
        # with one INSERT ... SELECT) read this index alone, a zone's readers in id order.
        # ix_subscribers_status stays: on SQLite it walks all active readers in id order.
        Index("ix_subscribers_status_timezone", "status", "timezone", "id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[SubscriberStatus] = mapped_column(_enum(SubscriberStatus, "subscriber_status"), index=True)
    source: Mapped[str] = mapped_column(String(50), default="")
    # The reader's own IANA zone ("Asia/Kolkata"), checked by ``timezones.check_zone``;
    # "" means the newsroom's zone. Not NULL, so grouping by zone needs no COALESCE.
    timezone: Mapped[str] = mapped_column(String(64), default="", server_default=text("''"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    unsubscribed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Edition(Base):
    __tablename__ = "editions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    date: Mapped[date] = mapped_column(Date, unique=True)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime)
    window_end: Mapped[datetime] = mapped_column(UTCDateTime)
    subject: Mapped[str] = mapped_column(String(500))
    status: Mapped[EditionStatus] = mapped_column(_enum(EditionStatus, "edition_status"), index=True)
    html: Mapped[str] = mapped_column(Text, default="")
    text: Mapped[str] = mapped_column(Text, default="")
    web_html: Mapped[str] = mapped_column(Text, default="")
    # Random per edition: makes personalisation markers unguessable and Message-IDs unique.
    nonce: Mapped[str] = mapped_column(String(32))
    article_count: Mapped[int] = mapped_column(Integer, default=0)
    recipient_count: Mapped[int] = mapped_column(Integer, default=0)
    sent_count: Mapped[int] = mapped_column(Integer, default=0)
    failed_count: Mapped[int] = mapped_column(Integer, default=0)
    deferred_count: Mapped[int] = mapped_column(Integer, default=0)
    skipped_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Per-reader time zones ([newsletter] per_reader_timezone): the readers of every zone
    # whose morning came at or before this instant have their deliveries. NULL: the edition
    # went to every reader at once.
    released_until: Mapped[datetime | None] = mapped_column(UTCDateTime)

    articles: Mapped[list[Article]] = relationship(back_populates="edition", order_by="Article.published_at.desc()")


class Delivery(Base):
    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("edition_id", "subscriber_id", name="uq_deliveries_edition_subscriber"),
        # Partial indexes, so that marking a row sent (thousands a second) touches no index:
        # claims walk the pending rows of an edition in id order; recovery finds the rows
        # in flight or deferred.
        Index(
            "ix_deliveries_pending",
            "edition_id",
            "id",
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
        Index(
            "ix_deliveries_unsettled",
            "edition_id",
            "status",
            sqlite_where=text("status IN ('sending', 'deferred')"),
            postgresql_where=text("status IN ('sending', 'deferred')"),
        ),
        # The rows that ended unsent, so an edition's counts read indexes alone: sent is the
        # total (the unique index) less the open, failed and skipped ones.
        Index(
            "ix_deliveries_unsent",
            "edition_id",
            "status",
            sqlite_where=text("status IN ('failed', 'skipped')"),
            postgresql_where=text("status IN ('failed', 'skipped')"),
        ),
        Index("ix_deliveries_subscriber_id", "subscriber_id"),
        CheckConstraint("attempts >= 0", name="attempts_not_negative"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    edition_id: Mapped[int] = mapped_column(ForeignKey("editions.id", ondelete="CASCADE"))
    # NULL once the subscriber is removed: the edition's counts survive, the address does not.
    subscriber_id: Mapped[int | None] = mapped_column(ForeignKey("subscribers.id", ondelete="SET NULL"))
    status: Mapped[DeliveryStatus] = mapped_column(_enum(DeliveryStatus, "delivery_status"))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(String(1000), default="")
    message_id: Mapped[str] = mapped_column(String(255), default="")
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claimed_by: Mapped[str] = mapped_column(String(200), default="")
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Lock(Base):
    """A named lock with an expiry; PostgreSQL uses advisory locks, SQLite this row."""

    __tablename__ = "locks"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SubscriberEvent(Base):
    """What happened to a subscription and when: the record behind joins/leaves per day.

    Reports from the mailbox (bounces, complaints) are events too, with the edition they
    were about, the DSN status and the server's diagnostic: the history says why a reader
    left, and an edition's feedback is counted from here.
    """

    __tablename__ = "subscriber_events"
    __table_args__ = (
        Index("ix_subscriber_events_at", "at"),
        # A reader's history by kind (their soft bounces in the window, why they bounced);
        # its leading column also serves the subscriber foreign key.
        Index("ix_subscriber_events_subscriber_event", "subscriber_id", "event", "at"),
        # An edition's feedback counted by kind; its leading column serves the edition foreign key.
        Index("ix_subscriber_events_edition_event", "edition_id", "event"),
        # One event per report and reader, whoever reads the mailbox and however often.
        Index(
            "ix_subscriber_events_reference",
            "subscriber_id",
            "reference",
            unique=True,
            sqlite_where=text("reference <> ''"),
            postgresql_where=text("reference <> ''"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # NULL once the subscriber row is removed: the day's counts survive, the address does not.
    subscriber_id: Mapped[int | None] = mapped_column(ForeignKey("subscribers.id", ondelete="SET NULL"))
    # subscribed | confirmed | unsubscribed | bounced | reactivated | removed, and from the
    # mailbox hard_bounce | soft_bounce | sender_block | complaint
    event: Mapped[str] = mapped_column(String(20))
    source: Mapped[str] = mapped_column(String(50), default="")
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The edition a report was about; NULL when not known (or the edition is gone).
    edition_id: Mapped[int | None] = mapped_column(ForeignKey("editions.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(String(10), default="", server_default=text("''"))  # "5.1.1"
    # The diagnostic; for a "subscribed" event of someone who had left, the time zone their
    # request gave, taken when they confirm it (``subscribers.request_subscription``).
    detail: Mapped[str] = mapped_column(String(300), default="", server_default=text("''"))
    # The caller's idempotency key for a report (a hash of the message and the recipient).
    reference: Mapped[str] = mapped_column(String(64), default="", server_default=text("''"))


class StaffUser(Base):
    """Someone allowed into the web admin; the password is stored hashed only."""

    __tablename__ = "staff_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class WebAttempt(Base):
    """One sign-up or login attempt from a client, kept an hour: rate limits that hold across processes."""

    __tablename__ = "web_attempts"
    __table_args__ = (Index("ix_web_attempts_kind_client_at", "kind", "client", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))  # subscribe | login
    client: Mapped[str] = mapped_column(String(64))  # a keyed hash of the client's IP, never the IP itself
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class FeedState(Base):
    """What a feed told us last time, for conditional requests (ETag / Last-Modified)."""

    __tablename__ = "feed_state"

    url: Mapped[str] = mapped_column(String(2048), primary_key=True)
    etag: Mapped[str] = mapped_column(String(500), default="")
    last_modified: Mapped[str] = mapped_column(String(100), default="")
    fetched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(500), default="")


class Worker(Base):
    """A sending process, as it last reported itself: for status pages and for sharing a rate limit."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)  # "host:pid", as in Delivery.claimed_by
    host: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(20))  # idle | sending | stopped
    edition_id: Mapped[int | None] = mapped_column(Integer)
    sent: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    deferred: Mapped[int] = mapped_column(Integer, default=0)
    rate: Mapped[float] = mapped_column(Float, default=0.0)  # messages/second lately
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class RateBucket(Base):
    """A token bucket shared by every worker: providers cap sending per account, not per process."""

    __tablename__ = "rate_buckets"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    tokens: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class OutboxKind(enum.StrEnum):
    CONFIRM = "confirm"  # the double opt-in's confirm link
    ALREADY = "already"  # "you already get it", with an unsubscribe link


class OutboxStatus(enum.StrEnum):
    PENDING = "pending"  # waiting for its next attempt, or in flight under a claim
    SENT = "sent"
    SKIPPED = "skipped"  # no longer needed when its turn came (the reader confirmed, or left)
    FAILED = "failed"  # refused for good, or still failing when the retry window closed


class OutboxMessage(Base):
    """A sign-up mail waiting to go out, written in the same transaction as the sign-up.

    It holds what rebuilds the message at send time (who, which kind), never the rendered
    message or its signed link: the token is made when the mail leaves, so nothing secret
    sits in the table. A failed attempt stays here with its error and the time of the next.
    """

    __tablename__ = "outbox_messages"
    __table_args__ = (
        # Claims walk the due rows in time order; sent and failed rows stay out of the index.
        Index(
            "ix_outbox_messages_due",
            "next_attempt_at",
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
        Index("ix_outbox_messages_subscriber_id", "subscriber_id"),
        CheckConstraint("attempts >= 0", name="attempts_not_negative"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Removing a reader (erasure) removes their queued mail with them.
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    recipient: Mapped[str] = mapped_column(String(320))
    kind: Mapped[OutboxKind] = mapped_column(_enum(OutboxKind, "outbox_kind"))
    status: Mapped[OutboxStatus] = mapped_column(_enum(OutboxStatus, "outbox_status"))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(String(1000), default="")
    # The latest request for this mail: the retry window counts from here.
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claimed_by: Mapped[str] = mapped_column(String(200), default="")
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)


class EditionLink(Base):
    """A link of one edition, by position: what a tracked click redirects to, and nothing else.

    The click endpoint looks the target up here, so it can only ever send a reader to a
    link the edition really had: not an open redirect, whatever the code says.
    """

    __tablename__ = "edition_links"

    edition_id: Mapped[int] = mapped_column(ForeignKey("editions.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    url: Mapped[str] = mapped_column(String(2048))


class Click(Base):
    """One reader's click on one link of an edition (scanners and HEAD requests are not recorded).

    No foreign keys to editions or subscribers: a click is written by the web process
    while a send may be writing deliveries, and must not wait on their rows. A reader
    removed later leaves their clicks counted but anonymous (``subscriber_id`` NULL).
    """

    __tablename__ = "clicks"
    __table_args__ = (
        # The counts are not read from here but from the rollups below, so no index of
        # this table covers them: every click would pay to keep one up to date.
        Index("ix_clicks_edition_position", "edition_id", "position"),
        # A reader's clicks by edition and link: whether a batch's readers had clicked
        # before (``store.clicks.record_clicks`` keeps the unique counts of the rollups
        # below), and their clicks made anonymous when they are removed.
        Index("ix_clicks_subscriber_edition", "subscriber_id", "edition_id", "position"),
        Index("ix_clicks_at", "at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    edition_id: Mapped[int] = mapped_column(Integer)
    position: Mapped[int] = mapped_column(Integer)  # 0: the open-tracking image, 1..n: the links
    subscriber_id: Mapped[int | None] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class ClicksByEdition(Base):
    """An edition's click figures, kept exact by the transaction that writes its clicks.

    Counting distinct readers from ``clicks`` reads every row of an edition (with opens
    tracked, 200,000 a day on a list of a million), so the report and the admin's charts
    read these instead. ``store.clicks.record_clicks`` adds to them in the clicks' own
    transaction, under this row's lock, and ``forget_clicks_of`` takes a removed reader
    out of the unique counts: they never differ from a count of the raw rows. No foreign
    key, as for the clicks they count.
    """

    __tablename__ = "clicks_by_edition"

    edition_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    clickers: Mapped[int] = mapped_column(Integer)  # readers still on the list who clicked any link
    clicks: Mapped[int] = mapped_column(Integer)  # every recorded click on a link
    openers: Mapped[int] = mapped_column(Integer)  # readers still on the list who opened it (position 0)


class ClicksByLink(Base):
    """One link's click figures (positions from 1), kept with ``ClicksByEdition`` by the same writers."""

    __tablename__ = "clicks_by_link"

    edition_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    position: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    readers: Mapped[int] = mapped_column(Integer)  # readers still on the list who clicked it
    clicks: Mapped[int] = mapped_column(Integer)  # every recorded click on it


class PreflightHold(Base):
    """An edition the scheduler held back because preflight found errors in it, and the notice.

    One row per edition, about the version of it that was held: ``fingerprint`` is a digest
    of what readers would get (``preflight.gate.fingerprint``), so the scheduler can tell an
    edition the editors have changed since (check it again) from the same one (leave it held,
    and say nothing more). ``findings`` is the report's errors and warnings as JSON, for the
    notice and the admin. ``notified_at`` is set when a process takes on telling the staff,
    so that only one does; a notice that could not be mailed is put back with its error.
    """

    __tablename__ = "preflight_holds"

    edition_id: Mapped[int] = mapped_column(ForeignKey("editions.id", ondelete="CASCADE"), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    findings: Mapped[str] = mapped_column(Text, default="")
    held_at: Mapped[datetime] = mapped_column(UTCDateTime)
    notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    notice_error: Mapped[str] = mapped_column(String(500), default="", server_default=text("''"))
