"""The send's failure policy on plain data: outcomes in, decisions and rows out, no server, no database."""

from __future__ import annotations

from newsletter.config import DeliveryConfig
from newsletter.errors import PermanentDeliveryError, SystemicDeliveryError, TemporaryDeliveryError
from newsletter.failures import FailurePolicy, Hold, Record, Retry
from newsletter.store.models import DeliveryStatus, Result, Work

CONFIG = DeliveryConfig(max_consecutive_failures=5, max_attempts=3, backoff_seconds=2, backoff_max_seconds=60)


def work(n: int) -> Work:
    return Work(n, 100 + n, f"reader{n}@example.org", "", 0)


def refused(text: str = "550 5.7.1 no thanks") -> PermanentDeliveryError:
    return PermanentDeliveryError(text, stage="rcpt")


def unknown_user() -> PermanentDeliveryError:
    error = PermanentDeliveryError("rcpt: 550 5.1.1 no such user", code=550, stage="rcpt", enhanced_status="5.1.1")
    assert error.is_hard_bounce
    return error


def timeout() -> TemporaryDeliveryError:
    return TemporaryDeliveryError("data: no answer within 30 s", stage="data")


def policy(**kwargs: object) -> FailurePolicy:
    return FailurePolicy(CONFIG, proven=bool(kwargs.get("proven", False)), jitter=lambda lo, hi: hi)


def test_a_refusal_is_held_until_a_later_success_vouches_for_it() -> None:
    p = policy()
    assert p.failed(work(1), refused(), 1, stopping=False) == Hold()
    assert p.vouched() == []  # no success since: it could be the server's fault
    p.succeeded()
    (row,) = p.vouched()
    assert (row.delivery_id, row.status, row.error, row.bounced) == (1, DeliveryStatus.FAILED, str(refused()), False)
    assert p.vouched() == [] and p.held == 0


def test_a_hard_bounce_is_recorded_as_one() -> None:
    p = policy()
    p.failed(work(1), unknown_user(), 1, stopping=False)
    p.succeeded()
    (row,) = p.vouched()
    assert row.status == DeliveryStatus.FAILED and row.bounced


def test_a_streak_of_failures_stops_the_run_and_fails_nobody() -> None:
    p = policy()
    for n in range(4):
        p.failed(work(n), refused(), 1, stopping=False)
        assert p.error is None
    p.failed(work(4), refused(), 1, stopping=False)
    assert isinstance(p.error, SystemicDeliveryError) and "the last 5 attempts in a row failed" in str(p.error)
    assert p.vouched() == []
    rows = p.final(interrupted=False)
    assert [r.status for r in rows] == [DeliveryStatus.PENDING] * 5
    assert all(r.error == str(refused()) for r in rows)  # the reason stays for the log


def test_dead_addresses_have_a_streak_ten_times_as_long() -> None:
    p = policy()
    for n in range(49):
        p.failed(work(n), unknown_user(), 1, stopping=False)
    assert p.error is None
    p.failed(work(49), unknown_user(), 1, stopping=False)
    assert p.error is not None and "the last 50 attempts" in str(p.error)


def test_a_success_resets_both_streaks() -> None:
    p = policy()
    for n in range(4):
        p.failed(work(n), refused(), 1, stopping=False)
    p.succeeded()
    for n in range(4, 8):
        p.failed(work(n), refused(), 1, stopping=False)
    assert p.error is None


def test_a_temporary_failure_is_retried_with_backoff_then_deferred() -> None:
    p = policy()
    assert p.failed(work(1), timeout(), 1, stopping=False) == Retry(2.0)  # jitter pinned to its top: 1 + 1
    assert p.failed(work(1), timeout(), 2, stopping=False) == Retry(4.0)
    assert p.failed(work(1), timeout(), 3, stopping=False) == Hold()  # attempts used up
    p.succeeded()
    (row,) = p.vouched()
    assert row.status == DeliveryStatus.DEFERRED and row.attempts == 3


def test_backoff_is_capped_and_jittered_over_its_upper_half() -> None:
    seen: list[tuple[float, float]] = []
    p = FailurePolicy(CONFIG, proven=False, jitter=lambda lo, hi: seen.append((lo, hi)) or lo)
    assert p.backoff(1) == 1.0 and p.backoff(10) == 30.0  # 2 * 2**9 capped at 60, lower half cut
    assert seen == [(0, 1.0), (0, 30.0)]


def test_while_stopping_a_temporary_failure_goes_back_to_pending_at_once() -> None:
    p = policy()
    verdict = p.failed(work(1), timeout(), 1, stopping=True)
    assert isinstance(verdict, Record) and verdict.result.status == DeliveryStatus.PENDING


def test_a_systemic_error_stops_the_run_and_returns_the_message() -> None:
    p = policy()
    error = SystemicDeliveryError("535 5.7.8 authentication failed", stage="mail")
    verdict = p.failed(work(1), error, 1, stopping=False)
    assert p.error is error
    assert verdict == Record(Result(1, 101, DeliveryStatus.PENDING, 1, str(error)))


def test_an_operators_stop_returns_unvouched_failures_to_pending() -> None:
    p = policy()
    p.failed(work(1), refused(), 1, stopping=False)
    p.succeeded()
    p.failed(work(2), refused(), 1, stopping=False)
    rows = {r.delivery_id: r.status for r in p.final(interrupted=True)}
    assert rows == {1: DeliveryStatus.FAILED, 2: DeliveryStatus.PENDING}


def test_a_server_that_accepted_nothing_fails_nobody() -> None:
    p = policy()
    for n in range(5):
        p.failed(work(n), unknown_user(), 1, stopping=False)  # not a streak: hard bounces count apart
    assert p.error is None
    rows = p.final(interrupted=False)
    assert isinstance(p.error, SystemicDeliveryError) and "accepted none" in str(p.error)
    assert {r.status for r in rows} == {DeliveryStatus.PENDING}


def test_but_a_few_refusals_on_a_small_list_are_real() -> None:
    p = policy()
    for n in range(4):
        p.failed(work(n), unknown_user(), 1, stopping=False)
    rows = p.final(interrupted=False)
    assert p.error is None and {r.status for r in rows} == {DeliveryStatus.FAILED}


def test_an_edition_this_server_already_delivered_records_its_refusals() -> None:
    p = policy(proven=True)
    for n in range(5):
        p.failed(work(n), unknown_user(), 1, stopping=False)
    rows = p.final(interrupted=False)
    assert p.error is None and {r.status for r in rows} == {DeliveryStatus.FAILED}
