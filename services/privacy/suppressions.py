"""The suppression list (`suppressions`): hashes of erased numbers, which the sync writers check
before and after each page so that an erased person is never imported again."""
from __future__ import annotations

from typing import Iterable

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from services.database import SUPPRESSION_KEY_KEYS, SUPPRESSIONS
from services.privacy.hashing import PhoneHasher, PrivacyKeyError
from utils.clock import utcnow



class SuppressionList:
    def __init__(self, db: Database, hasher: PhoneHasher | None):
        self.entries = db[SUPPRESSIONS]
        self.hasher = hasher

    def add(self, digest: str) -> None:
        """Idempotent: an entry already there (a second `forget`, or two at once) is left as it was."""
        try:
            self.entries.update_one({"_id": self.entries.local_id(digest)},
                                    {"$setOnInsert": {"keyId": self.hasher.key_id, "createdAt": utcnow()}},
                                    upsert=True)
        except DuplicateKeyError:
            pass  # another forget of the same number inserted it first

    def suppressed(self, phone_keys: Iterable[str]) -> set[str]:
        """Which of these numbers (stored keys) are erased. Without a key nothing can be compared:
        that is an error once the list holds anything, not a reason to import the person again."""
        keys = set(phone_keys)
        if not keys:
            return set()
        if self.hasher is None:
            self.check_key()
            return set()
        by_id = {self.entries.local_id(self.hasher.digest(key)): key for key in keys}
        return {by_id[entry["_id"]] for entry in self.entries.find({"_id": {"$in": list(by_id)}}, {"_id": 1})}

    def check_key(self) -> None:
        """At start-up and whenever a key is needed: the list is usable with this configuration."""
        if self.hasher is None:
            if self.entries.find_one({}, {"_id": 1}, hint=SUPPRESSION_KEY_KEYS) is not None:
                raise PrivacyKeyError("PRIVACY_HASH_KEY is not set, but the suppression list holds erased "
                                      "numbers: without the key they cannot be recognized, and a sync would "
                                      "import them again. Set the key they were hashed with (docs/privacy.md).")
            return
        # `keyId`, named: a simpler planner (the test run's wire server) scans for a `$ne`.
        other = self.entries.find_one({"keyId": {"$ne": self.hasher.key_id}}, {"_id": 1}, hint=SUPPRESSION_KEY_KEYS)
        if other is not None:
            raise PrivacyKeyError("PRIVACY_HASH_KEY is not the key the suppression list was written with: "
                                  "erased numbers would not be recognized. Restore the earlier key "
                                  "(docs/privacy.md).")
