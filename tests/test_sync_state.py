"""The cursor rules on their own: where a run reads from, which unfinished call holds the cursor
and which is followed by id, where the cursor moves after a window, and how state is stored."""
from datetime import datetime, timedelta

import pytest

from fakes.mongo_hooks import HookedClient
from services.database import SYNC_STATE, account_view
from services.sync_state import (PENDING_HOLD, PENDING_MAX_AGE, PENDING_PER_RUN, SAVE_EVERY_WINDOWS, Followed,
                                 SyncState, WindowProgress, follow_ups)

NOW = datetime(2026, 11, 27, 12, 0)
WINDOW_END = NOW - timedelta(minutes=1)


def held(created_at: datetime) -> bool:
    progress = WindowProgress()
    progress.unfinished("call", created_at, NOW)
    return progress.cursor(WINDOW_END) == created_at and not progress.followed


def test_an_unfinished_call_holds_the_cursor_until_it_is_pending_hold_old():
    assert held(NOW - timedelta(minutes=3))
    assert held(NOW - PENDING_HOLD + timedelta(seconds=1))
    assert not held(NOW - PENDING_HOLD)
    assert not held(NOW - timedelta(days=3))


def test_a_window_with_nothing_to_read_again_moves_the_cursor_to_its_end():
    assert WindowProgress().cursor(WINDOW_END) == WINDOW_END


def test_the_cursor_stops_at_the_oldest_call_to_read_again():
    progress = WindowProgress()
    progress.unfinished("c1", NOW - timedelta(minutes=5), NOW)
    progress.unfinished("c2", NOW - timedelta(minutes=50), NOW)  # a full record worth retrying
    progress.unfinished("c3", NOW - timedelta(minutes=20), NOW)
    assert progress.cursor(WINDOW_END) == NOW - timedelta(minutes=50)


def test_a_hold_past_the_window_end_never_moves_the_cursor_beyond_the_window():
    progress = WindowProgress()
    progress.unfinished("c1", WINDOW_END + timedelta(minutes=5), NOW)
    assert progress.cursor(WINDOW_END) == WINDOW_END


def test_a_young_unfinished_call_holds_and_an_old_one_is_followed_instead():
    progress = WindowProgress()
    progress.unfinished("young", NOW - timedelta(minutes=2), NOW)
    progress.unfinished("scheduled", NOW - timedelta(hours=7), NOW)
    assert progress.cursor(WINDOW_END) == NOW - timedelta(minutes=2)
    assert progress.followed == {"scheduled": Followed(NOW - timedelta(hours=7))}


def test_old_unfinished_calls_alone_do_not_hold_the_cursor():
    progress = WindowProgress()
    progress.unfinished("scheduled", NOW - timedelta(hours=7), NOW)
    assert progress.cursor(WINDOW_END) == WINDOW_END


def test_follow_ups_take_the_oldest_first_and_leave_the_rest_for_the_next_run():
    pending = {f"c{n:03d}": Followed(NOW - timedelta(hours=7, minutes=n)) for n in range(PENDING_PER_RUN + 5)}
    plan = follow_ups(pending, NOW)
    oldest_first = sorted(pending, key=lambda call_id: pending[call_id].created_at)
    assert plan.fetch == oldest_first[:PENDING_PER_RUN]
    assert plan.keep == {call_id: pending[call_id] for call_id in oldest_first[PENDING_PER_RUN:]}
    assert plan.expired == []


def test_calls_checked_least_recently_come_first_so_none_starves():
    # The oldest PENDING_PER_RUN never finish; the newer ones must still be checked next run.
    stuck = {f"stuck-{n:03d}": Followed(NOW - timedelta(days=2, minutes=n), checked_at=NOW - timedelta(minutes=5))
             for n in range(PENDING_PER_RUN)}
    waiting = {f"new-{n}": Followed(NOW - timedelta(hours=8)) for n in range(3)}
    plan = follow_ups({**stuck, **waiting}, NOW)
    assert set(plan.fetch[:3]) == set(waiting)
    assert len(plan.fetch) == PENDING_PER_RUN and len(plan.keep) == 3


def test_a_call_unfinished_for_too_long_is_no_longer_followed():
    pending = {"stuck": Followed(NOW - PENDING_MAX_AGE - timedelta(minutes=1)), "late": Followed(NOW - PENDING_MAX_AGE)}
    plan = follow_ups(pending, NOW)
    assert plan.expired == ["stuck"] and plan.fetch == ["late"] and plan.keep == {}


def test_nothing_followed_means_nothing_to_do():
    plan = follow_ups({}, NOW)
    assert (plan.fetch, plan.keep, plan.expired) == ([], {}, [])


# -- the stored state -----------------------------------------------------------------------------

@pytest.fixture
def operations():
    return []


@pytest.fixture
def state_collection(mongo, operations):
    return account_view(HookedClient(mongo, lambda collection, method: operations.append(method))["callsync_test"], None)[SYNC_STATE]


def test_state_is_read_in_one_query_and_written_in_one_batch(state_collection, operations):
    state = SyncState(state_collection, "crm_sync", NOW)
    for agent in ("a1", "a2", "a3"):
        state.window_done(agent, WINDOW_END, WindowProgress())
    state.save()
    assert operations == ["find", "bulk_write"]

    reloaded = SyncState(state_collection, "crm_sync", NOW)
    assert [reloaded.cursor(agent) for agent in ("a1", "a2", "a3")] == [WINDOW_END] * 3
    assert SyncState(state_collection, "call_processor", NOW).cursor("a1") is None  # each job its own


WINDOW = {"overlap": timedelta(minutes=10), "backfill": timedelta(days=30)}


def test_a_first_run_reads_the_backfill_and_a_later_one_overlaps_its_cursor(state_collection):
    state = SyncState(state_collection, "crm_sync", NOW)
    assert state.read_from("a1", **WINDOW) == NOW - timedelta(days=30)
    state.window_done("a1", NOW - timedelta(hours=1), WindowProgress())
    assert state.read_from("a1", **WINDOW) == NOW - timedelta(hours=1, minutes=10)


def test_a_first_sync_cut_off_reads_from_the_same_start_hours_later_under_either_job(state_collection):
    # The first attempt recorded its start and died before any window was done (no cursor saved).
    assert SyncState(state_collection, "crm_sync", NOW).read_from("a1", **WINDOW) == NOW - timedelta(days=30)
    later = NOW + timedelta(hours=7)
    for job in ("crm_sync", "call_processor"):
        assert SyncState(state_collection, job, later).read_from("a1", **WINDOW) == NOW - timedelta(days=30)
    # Another agent's first sync starts from its own.
    assert SyncState(state_collection, "crm_sync", later).read_from("a2", **WINDOW) == \
        later - timedelta(days=30)


def test_a_long_backfill_saves_every_few_windows(state_collection, operations):
    state = SyncState(state_collection, "crm_sync", NOW)
    for window in range(SAVE_EVERY_WINDOWS):
        state.window_done("a1", NOW - timedelta(days=7 * (SAVE_EVERY_WINDOWS - window)), WindowProgress())
    assert operations.count("bulk_write") == 1 and not state.unsaved


def test_followed_calls_accumulate_and_are_stored_with_the_cursor(state_collection):
    state = SyncState(state_collection, "crm_sync", NOW)
    first, second = WindowProgress(), WindowProgress()
    first.unfinished("old-1", NOW - timedelta(days=2), NOW)
    second.unfinished("old-2", NOW - timedelta(days=1), NOW)
    state.window_done("a1", WINDOW_END - timedelta(days=7), first)
    state.window_done("a1", WINDOW_END, second)
    state.save()
    reloaded = SyncState(state_collection, "crm_sync", NOW)
    assert reloaded.pending("a1") == {"old-1": Followed(NOW - timedelta(days=2)),
                                      "old-2": Followed(NOW - timedelta(days=1))}
    assert reloaded.cursor("a1") == WINDOW_END


def test_unchanged_follow_ups_write_nothing(state_collection, operations):
    state = SyncState(state_collection, "crm_sync", NOW)
    state.set_pending("a1", {})
    state.save()
    assert operations == ["find"]


def test_a_call_followed_already_keeps_when_it_was_last_checked(state_collection):
    state = SyncState(state_collection, "crm_sync", NOW)
    state.set_pending("a1", {"old": Followed(NOW - timedelta(days=2), checked_at=NOW - timedelta(minutes=5))})
    progress = WindowProgress()
    progress.unfinished("old", NOW - timedelta(days=2), NOW)  # the listing shows it again
    state.window_done("a1", WINDOW_END, progress)
    assert state.pending("a1")["old"].checked_at == NOW - timedelta(minutes=5)


def test_a_hold_from_an_earlier_window_of_the_run_still_holds_after_a_later_window(state_collection):
    # The feed keeps one WindowProgress for all the windows of an agent's run (issue 23, hole 1).
    state, progress = SyncState(state_collection, "crm_sync", NOW), WindowProgress()
    progress.unfinished("ringing", NOW - timedelta(hours=2), NOW)
    state.window_done("a1", NOW - timedelta(hours=1), progress)
    state.window_done("a1", WINDOW_END, progress)  # the next window: nothing of its own to hold
    assert state.cursor("a1") == NOW - timedelta(hours=2)
