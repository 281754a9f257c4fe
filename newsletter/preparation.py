"""The edition for a date as it would be made now, and making it: selection, layout, rendering.

Every view of an edition not yet going out (``preview``, the admin's next-edition page, a
test copy, ``articles add`` saying where a story goes, the scheduler counting a skipped
day's late stories) and ``send`` itself use ``plan_for``, so they always agree. Making is
optimistic: an open edition is made again from the articles as they are, and a race with
another process rolls back whole (``ConflictError``) and selects again.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy.exc import IntegrityError

from newsletter import routes
from newsletter.clock import Clock
from newsletter.config import Config
from newsletter.context import Context
from newsletter.editions import (
    EditionPlan,
    Layout,
    Window,
    edition_date_due,
    local_date,
    plan_edition,
    window_for,
)
from newsletter.errors import ConflictError, UsageError
from newsletter.render import Branding, Links, Markers, RenderedEdition, build_environment, render_edition
from newsletter.store import Store
from newsletter.store.articles import edition_articles, edition_candidates, free_article_count, too_old_articles
from newsletter.store.clicks import edition_links, save_edition_links
from newsletter.store.editions import edition_for, has_gone_out, previous_edition, save_open_edition
from newsletter.store.models import (
    Article,
    Edition,
    EditionStatus,
)
from newsletter.tracking import LinkPolicy, link_policy, untrack

log = logging.getLogger(__name__)


def branding(config: Config) -> Branding:
    n = config.newsletter
    return Branding(name=n.name, publication=n.publication, address=n.address)


def links_for(config: Config, day: date) -> Links:
    base = config.web.base_url
    return Links(
        view_in_browser=routes.url(base, routes.EDITION, day=day.isoformat()),
        subscribe=routes.url(base, routes.SUBSCRIBE),
    )


def resolve_day(config: Config, clock: Clock, day: date | None) -> date:
    """No date means the edition most recently due: today's after its send time, else yesterday's."""
    if day is not None:
        return day
    n = config.newsletter
    return edition_date_due(clock.now(), n.send_time, n.zone)


def layout(config: Config) -> Layout:
    n = config.newsletter
    return Layout(sections=n.sections, more_stories=n.more_stories)


def edition_window(config: Config, clock: Clock, day: date, previous: Edition | None, look_ahead: bool) -> Window:
    n = config.newsletter
    max_age = timedelta(hours=n.max_age_hours)
    try:
        window = window_for(day, n.send_time, n.zone, previous.window_end if previous else None, max_age)
    except OverflowError:  # the first or last days of the calendar: no window fits
        raise UsageError(f"there is no edition for {day}: the date is out of range") from None
    now = clock.now()
    if window.end > now:
        upcoming = local_date(now, n.zone) + timedelta(days=1)  # a look ahead reaches tomorrow at most
        if day > local_date(now, n.zone) and not (look_ahead and day == upcoming):
            hint = (
                f"; the next one, {upcoming}, can be previewed as it stands"
                if look_ahead
                else f"; `newsletter preview --date {upcoming}` shows the next one as it stands"
            )
            raise UsageError(f"the edition for {day} is not due yet: it goes out at its send time{hint}")
        # Sent early by hand, or looked at ahead of time: cover up to now (a send makes the
        # next edition start from here, so nothing published before its send time is lost).
        window = Window(start=window.start, end=now)
    return window


@dataclass(frozen=True)
class Selection:
    """What the edition for a date holds if it is made now, and what is too old to go in it."""

    plan: EditionPlan
    article_ids: tuple[int, ...]
    too_old: tuple[tuple[int, str, datetime], ...]  # (id, title, published_at) of each

    def too_old_note(self, max_age_hours: int) -> str:
        if not self.too_old:
            return ""
        n = len(self.too_old)
        what = "1 article was" if n == 1 else f"{n} articles were"
        return (
            f"{what} published too long before this edition (over {max_age_hours} hours, and before the "
            "previous edition) and will not be sent: `newsletter articles list` marks them; "
            "`articles pin ID` puts one in"
        )


def plan_for(ctx: Context, day: date, *, look_ahead: bool = False) -> Selection:
    """Select and lay out an edition still open (not made, made, or skipped) without writing anything.

    The same selection makes the edition when it is sent, so a preview shows what would go
    out now. ``look_ahead`` (for previews and test copies, which record nothing) also accepts
    the edition after the one due now, with the articles published so far.
    """
    config = ctx.config
    with ctx.store.session() as session:
        existing = edition_for(session, day)
        previous = previous_edition(session, day)
        window = edition_window(config, ctx.clock, day, previous, look_ahead)
        remaking = existing.id if existing is not None and not has_gone_out(existing) else None
        articles = edition_candidates(session, day, window.start, window.end, edition_id=remaking)
        old = too_old_articles(session, day, window.start, previous.created_at if previous else None)
        too_old = tuple((a.id, a.title, a.published_at) for a in old)
        previous_day = previous.date if previous is not None else None
    n = config.newsletter
    plan = plan_edition(
        day,
        window,
        articles,
        n.subject,
        name=n.name,
        publication=n.publication,
        layout=layout(config),
        previous=previous_day,
    )
    return Selection(plan, tuple(s.id for s in plan.stories), too_old)


def next_edition_day(ctx: Context) -> date:
    """The edition a reader will get next: the one due now, unless it has gone out (or was
    skipped), or is empty while newer articles wait (a new install after the send time);
    then the first one after it that has not gone out."""
    due = resolve_day(ctx.config, ctx.clock, None)
    with ctx.store.session() as session:
        made = edition_for(session, due)
        if made is not None and made.status != EditionStatus.READY:
            following = due + timedelta(days=1)
            while (later := edition_for(session, following)) is not None and later.status != EditionStatus.READY:
                following += timedelta(days=1)
            return following
    plan = plan_for(ctx, due).plan
    if plan.is_empty and waiting_after(ctx.store, ctx.clock, plan.window.end):
        return due + timedelta(days=1)
    return due


def next_window_start(ctx: Context) -> datetime:
    """How far back the next edition readers get reaches: anything older and unsent is too old."""
    day = next_edition_day(ctx)
    with ctx.store.session() as session:
        return edition_window(ctx.config, ctx.clock, day, previous_edition(session, day), look_ahead=True).start


def article_destination(ctx: Context, article_id: int) -> tuple[str, bool]:
    """Where an article stands, in words, and whether that is fine (False: it will not be sent)."""
    with ctx.store.session() as session:
        article = session.get(Article, article_id)
        assert article is not None
        made = article.edition
        if has_gone_out(made):
            return f"it is in the edition of {made.date} ({made.status})", True
        hidden, pinned, published = article.hidden, article.pinned_for, article.published_at
    if hidden:
        return "it is hidden: no edition takes it until `articles unhide`", True
    day = next_edition_day(ctx)
    if pinned is not None and pinned > day:
        return f"it is pinned to lead the edition of {pinned}, and waits for it", True
    selection = plan_for(ctx, day, look_ahead=True)
    if article_id in selection.article_ids:
        due = resolve_day(ctx.config, ctx.clock, None)
        with ctx.store.session() as session:
            skipped = (made := edition_for(session, due)) is not None and made.status == EditionStatus.SKIPPED
        if due != day and skipped and article_id in plan_for(ctx, due).article_ids:
            return (
                f"it goes in the next edition, of {day}; or in the edition of {due}, skipped for want of "
                f"articles, if that is sent now (`newsletter send --date {due}`)",
                True,
            )
        return f"it goes in the next edition, of {day}", True
    if published > selection.plan.window.end:
        return f"it is dated after the next edition ({day}) and waits for a later one", True
    return (
        f"it was published too long before the next edition ({day}) to be sent (over "
        f"{ctx.config.newsletter.max_age_hours} hours, and before the previous edition): "
        f"`newsletter articles pin {article_id}` sends it anyway",
        False,
    )


def articles_waiting(ctx: Context, day: date) -> int:
    """How many articles the edition for ``day`` would hold if it were made now."""
    return len(plan_for(ctx, day).article_ids)


def waiting_after(store: Store, clock: Clock, moment: datetime) -> int:
    """Articles already published after ``moment`` (a cutoff), waiting for a later edition."""
    with store.session() as session:
        return free_article_count(session, moment, clock.now())


def waiting_note(store: Store, clock: Clock, cutoff_: datetime) -> str:
    waiting = waiting_after(store, clock, cutoff_)
    if not waiting:
        return ""
    counted = "1 newer article waits" if waiting == 1 else f"{waiting} newer articles wait"
    return f" ({counted} for the next edition)"


def links_policy(config: Config, plan: EditionPlan) -> LinkPolicy:
    """How the edition's links are tracked and tagged: ``[tracking]`` over this plan's stories."""
    tracking = config.tracking
    return link_policy(
        config.web.base_url,
        (story.url for story in plan.stories),
        clicks=tracking.clicks,
        opens=tracking.opens,
        utm=tracking.utm,
        utm_source=tracking.utm_source,
        utm_medium=tracking.utm_medium,
        campaign=config.list_id.split(".", 1)[0],
        day=plan.date,
    )


def render_plan(config: Config, plan: EditionPlan, nonce: str) -> RenderedEdition:
    env = build_environment(config.newsletter.templates or None)
    return render_edition(
        plan, branding(config), links_for(config, plan.date), nonce, env, config.design, links_policy(config, plan)
    )


@dataclass(frozen=True)
class Preview:
    """An edition as it would reach a reader now: what `preview` writes and the admin shows."""

    day: date
    status: EditionStatus | None  # None: not made yet
    html: str  # with the reader's markers; tracked links shown as their targets, so staff can follow them
    text: str
    markers: Markers
    story_count: int
    selection: Selection | None  # None once the edition has started going out: its stories are fixed
    html_bytes: int = 0  # the HTML part as it is sent (tracked links and all): what Gmail's clipping counts

    @property
    def state(self) -> str:
        """'not made', 'made', 'sending', 'sent' or 'skipped', in the words staff use."""
        if self.status is None:
            return "not made"
        return "made" if self.status == EditionStatus.READY else self.status.value


@dataclass(frozen=True)
class Standing:
    """An edition as it stands: its stored copy once fixed, else one made now from the articles and not saved."""

    edition: Edition  # the stored row, or an unsaved one made now (its id that of the row, if any, else 0)
    row: Edition | None  # the stored row, whatever its state
    links: tuple[str, ...]  # tracked link targets by position, from 1
    titles: tuple[str, ...]  # the stories' headlines, in the edition's order
    selection: Selection | None  # what was selected now; None for a stored copy
    html_bytes: int  # the HTML part as it is sent (tracked links and all): what Gmail's clipping counts


def edition_as_it_stands(ctx: Context, day: date, *, nonce: str | None = None, made_is_fixed: bool = False) -> Standing:
    """The edition for ``day``: the stored copy once it has gone out, else what `send` would make now.

    The one reading of "stored, else planned and rendered" that previews, test copies and
    preflight share, so they agree with each other and with the send. ``made_is_fixed``
    also takes a made, not yet started edition as it is stored (a sender about to send
    it); ``nonce`` marks a copy made now (default: the row's, else a new one).
    """
    with ctx.store.session() as session:
        row = edition_for(session, day)
        fixed = has_gone_out(row) or (made_is_fixed and row is not None and row.status == EditionStatus.READY)
        if fixed:
            assert row is not None
            saved = edition_links(session, row.id)
            links = tuple(url for _, url in sorted(saved.links.items())) if saved else ()
            titles = tuple(a.title for a in edition_articles(session, row.id))
            return Standing(row, row, links, titles, None, len(row.html.encode()))
    selection = plan_for(ctx, day, look_ahead=True)
    plan = selection.plan
    nonce = nonce or (row.nonce if row is not None else secrets.token_hex(8))
    rendered = render_plan(ctx.config, plan, nonce)
    edition = Edition(
        id=row.id if row is not None else 0,
        date=day,
        subject=plan.subject,
        html=rendered.html,
        text=rendered.text,
        web_html=rendered.web_html,
        nonce=nonce,
        article_count=plan.story_count,
    )
    titles = tuple(story.title for story in plan.stories)
    return Standing(edition, row, rendered.links, titles, selection, rendered.html_bytes)


def preview_edition(ctx: Context, day: date) -> Preview:
    """The edition for ``day`` as it stands (``edition_as_it_stands``), with tracked links shown as their targets."""
    standing = edition_as_it_stands(ctx, day, nonce="preview")
    edition, base = standing.edition, ctx.config.web.base_url
    markers = Markers.for_nonce(edition.nonce)
    html = untrack(edition.html, markers.click, base, standing.links, escape=True)
    text = untrack(edition.text, markers.click, base, standing.links, escape=False)
    status = standing.row.status if standing.row is not None else None
    return Preview(day, status, html, text, markers, edition.article_count, standing.selection, standing.html_bytes)


PREPARE_ATTEMPTS = 3


def prepare_edition(ctx: Context, day: date) -> Edition:
    """The edition for ``day``, made now unless it has started going out (see ``make_edition``)."""
    return make_edition(ctx, day)[0]


def make_edition(ctx: Context, day: date) -> tuple[Edition, Selection | None]:
    """The edition for ``day``, made now if it has not started going out, with what was selected.

    An edition still open (made but not started, or skipped for want of articles) is made
    again from the articles as they are now: stories that arrived late, were hidden, pinned
    or edited since count, and a skipped day with articles now goes out. Once deliveries
    exist the edition is fixed, and the selection returned is None.
    """
    config, store = ctx.config, ctx.store
    for _ in range(PREPARE_ATTEMPTS):
        with store.session() as session:
            existing = edition_for(session, day)
        if has_gone_out(existing):
            return existing, None
        selection = plan_for(ctx, day)
        plan = selection.plan
        nonce = existing.nonce if existing is not None else secrets.token_hex(8)
        empty = plan.is_empty and not config.newsletter.send_when_empty
        rendered = None if empty else render_plan(config, plan, nonce)
        now = ctx.clock.now()
        values = {
            "window_start": plan.window.start,
            "window_end": plan.window.end,
            "subject": plan.subject,
            "status": EditionStatus.SKIPPED if empty else EditionStatus.READY,
            "html": rendered.html if rendered else "",
            "text": rendered.text if rendered else "",
            "web_html": rendered.web_html if rendered else "",
            "nonce": nonce,
            "article_count": plan.story_count,
            "created_at": existing.created_at if existing is not None else now,
            "finished_at": now if empty else None,
        }
        try:
            with store.session() as session:
                edition = save_open_edition(session, day, values, selection.article_ids, existing)
                save_edition_links(session, edition.id, rendered.links if rendered else ())
        except IntegrityError:
            # The statement and its parameters (the whole edition) are no use in a log.
            log.info("edition %s was saved by another process while this one made it; selecting again", day)
            continue
        except ConflictError as exc:
            log.info("edition %s changed while it was being made (%s); selecting again", day, exc)
            continue
        log.info(
            "edition %s %s: %d articles, window %s to %s%s",
            day,
            "remade" if existing is not None else "prepared",
            plan.story_count,
            plan.window.start.isoformat(timespec="minutes"),
            plan.window.end.isoformat(timespec="minutes"),
            " (empty: skipped)" if empty else "",
        )
        return edition, selection
    raise ConflictError(f"the edition of {day} kept changing while it was being made; run send again")
