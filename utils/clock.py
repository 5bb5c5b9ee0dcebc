"""Time as the daemon stores it: naive UTC at millisecond precision, what MongoDB keeps and
pymongo (with `tz_aware=False`) hands back, so stored and fresh values compare equal."""
from __future__ import annotations

from datetime import datetime, timezone

# The time of what has none stored (a record written before the field existed): older than any.
EPOCH = datetime(1970, 1, 1)


def utcnow() -> datetime:
    return to_millis(datetime.now(timezone.utc).replace(tzinfo=None))


def naive_utc(moment: datetime) -> datetime:
    """A naive time is taken to be UTC already."""
    return moment.astimezone(timezone.utc).replace(tzinfo=None) if moment.tzinfo else moment


def to_millis(moment: datetime) -> datetime:
    """Truncated to what BSON stores, so a value re-read from MongoDB is unchanged."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def unix_seconds(stored: datetime) -> float:
    return stored.replace(tzinfo=timezone.utc).timestamp()
