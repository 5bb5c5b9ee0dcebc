"""The account source (services/accounts): which accounts are served, with which keys, and how an
account that cannot be served is skipped without a key ever reaching a log."""
import json
import logging

import pytest
from bson import ObjectId
from cryptography.fernet import Fernet

from services.accounts.source import KeyReader, Account, AccountSource, UnusableAccount, projection, read_path
from services.accounts.scoped import local_id
from utils.config import ConfigError, Settings, describe, load_settings

OLD_SECRET = Fernet.generate_key().decode()
NEW_SECRET = Fernet.generate_key().decode()
OTHER_SECRET = Fernet.generate_key().decode()


def account(_id, key="bn-key", status="active", **fields):
    document = {"_id": _id, "email": f"{_id}@example.com", "password": "hash", **fields}
    if key is not None:
        document["bolnaApiKey"] = key
    if status is not None:
        document["subscription"] = {"status": status, "plan": "pro"}
    return document


def encrypt(secret: str, plain: str) -> str:
    return Fernet(secret.encode()).encrypt(plain.encode()).decode()


def mongodb_settings(**variables) -> Settings:
    return load_settings({"ACCOUNT_SOURCE": "mongodb", **variables})


def load(db, **variables):
    return AccountSource(mongodb_settings(**variables), db).load()


def ids(account_list):
    return [account.id for account in account_list.accounts]


# ---- reading the accounts from the database (again on a real server: test_mongodb_integration_accounts.py)

class TestSourceOnDatabase:
    @pytest.fixture
    def db(self, whole_db):
        """The database itself: the accounts are read by what serves every account, never through
        one account's view (which refuses the accounts collection)."""
        return whole_db

    def test_the_default_filter_serves_active_and_trial_accounts_that_have_a_key(self, db):
        db.users.insert_many([
            account("active"), account("trial", status="trial"), account("cancelled", status="cancelled"),
            account("empty-key", key=""), account("null-key", key=None) | {"bolnaApiKey": None},
            account("no-key", key=None), account("no-subscription", status=None),
        ])
        loaded = load(db)
        assert ids(loaded) == ["active", "trial"] and loaded.skipped == ()
        assert loaded.accounts[0].bolna_api_key == "bn-key"

    def test_an_account_maps_to_a_account_with_its_overrides(self, db):
        oid = ObjectId()
        db.users.insert_one(account(oid, key="  bn-1  ", bolnaAgentIds=["a1", " a2 ", "a1"], groqApiKey="gsk_1",
                                    phoneRegion="us", callsync={"llmBatchLimit": 20.0, "bolnaRequestsPerMinute": 300}))
        db.users.insert_one(account("bare", phoneRegion="", bolnaAgentIds=[]))
        # Sorted by _id in BSON's order of types: strings before ObjectIds.
        bare, first = load(db).accounts
        assert first == Account(id=oid, bolna_api_key="bn-1", agent_ids=("a1", "a2"), groq_api_key="gsk_1",
                               phone_region="US", llm_batch_limit=20, bolna_requests_per_minute=300)
        assert type(first.llm_batch_limit) is int
        assert bare == Account(id="bare", bolna_api_key="bn-key")

    def test_field_names_are_overridden_with_dotted_paths_and_the_default_filter_follows(self, db):
        db.users.insert_many([
            {"_id": "nested", "subscription": {"status": "active"},
             "integrations": {"bolna": {"key": "bn-nested", "agents": ["x"]}, "groq": "gsk_nested"},
             "limits": {"llm": 3}},
            # The default name alone no longer counts: the filter asks for the overridden path.
            account("top-level"),
        ])
        fields = {"bolnaApiKey": "integrations.bolna.key", "agentIds": "integrations.bolna.agents",
                  "groqApiKey": "integrations.groq", "llmBatchLimit": "limits.llm"}
        loaded = load(db, ACCOUNT_FIELDS=json.dumps(fields))
        assert loaded.accounts == (Account(id="nested", bolna_api_key="bn-nested", agent_ids=("x",),
                                         groq_api_key="gsk_nested", llm_batch_limit=3),)

    def test_a_filter_and_a_collection_of_ones_own(self, db):
        db.accounts.insert_many([account("pro", plan="pro"), account("free", plan="free"),
                                 account("pro-without-key", key=None, plan="pro")])
        loaded = load(db, ACCOUNTS_COLLECTION="accounts", ACCOUNTS_FILTER='{"plan": "pro"}')
        assert ids(loaded) == ["pro"]
        # The filter no longer excludes accounts without a key: each is skipped, with its reason.
        assert [(s.account_id, s.reason) for s in loaded.skipped] == [("pro-without-key", "bolnaApiKey is missing or empty")]

    def test_encrypted_keys_are_decrypted(self, db):
        db.users.insert_one(account("enc", key=encrypt(NEW_SECRET, "bn-plain"), groqApiKey=encrypt(NEW_SECRET, "gsk_plain")))
        (served,) = load(db, ACCOUNT_KEYS_SECRET=NEW_SECRET).accounts
        assert served.bolna_api_key == "bn-plain" and served.groq_api_key == "gsk_plain"

    def test_while_rotating_keys_encrypted_with_the_old_secret_still_decrypt(self, db):
        secret = f"{NEW_SECRET}, {OLD_SECRET}"
        reader = KeyReader.from_secret(secret)
        db.users.insert_many([account("old", key=encrypt(OLD_SECRET, "bn-old")),
                              account("new", key=encrypt(NEW_SECRET, "bn-new")),
                              account("written-now", key=reader.encrypt("bn-now"))])
        loaded = load(db, ACCOUNT_KEYS_SECRET=secret)
        assert [t.bolna_api_key for t in loaded.accounts] == ["bn-new", "bn-old", "bn-now"]
        # The first key encrypts: once the old one is dropped, what was written now still decrypts.
        assert KeyReader.from_secret(NEW_SECRET).plain(reader.encrypt("k")) == "k"

    def test_a_key_that_does_not_decrypt_skips_only_its_account(self, db, caplog):
        db.users.insert_many([account("a-wrong", key=encrypt(OTHER_SECRET, "bn-wrong")),
                              account("b-right", key=encrypt(NEW_SECRET, "bn-right")),
                              account("c-plain", key="bn-stored-plain"),
                              account("d-groq", key=encrypt(NEW_SECRET, "bn-d"), groqApiKey="not-a-token")])
        with caplog.at_level(logging.WARNING, logger="services.accounts"):
            loaded = load(db, ACCOUNT_KEYS_SECRET=NEW_SECRET)
        assert ids(loaded) == ["b-right"]
        reasons = {s.account_id: s.reason for s in loaded.skipped}
        assert reasons == {
            "a-wrong": "bolnaApiKey does not decrypt with ACCOUNT_KEYS_SECRET (encrypted with another key, or stored unencrypted)",
            "c-plain": "bolnaApiKey does not decrypt with ACCOUNT_KEYS_SECRET (encrypted with another key, or stored unencrypted)",
            "d-groq": "groqApiKey does not decrypt with ACCOUNT_KEYS_SECRET (encrypted with another key, or stored unencrypted)",
        }
        messages = [r.getMessage() for r in caplog.records]
        assert any("account a-wrong skipped" in m and "does not decrypt" in m for m in messages)
        assert [r.levelno for r in caplog.records] == [logging.WARNING] * 3

    def test_an_encrypted_looking_key_without_a_secret_is_refused(self, db):
        db.users.insert_many([account("enc", key=encrypt(NEW_SECRET, "bn-x")), account("plain")])
        loaded = load(db)
        assert ids(loaded) == ["plain"]
        assert [(s.account_id, s.reason) for s in loaded.skipped] == [
            ("enc", "bolnaApiKey looks encrypted but ACCOUNT_KEYS_SECRET is not set")]

    @pytest.mark.parametrize("fields,reason", [
        ({"bolnaAgentIds": "a1,a2"}, "bolnaAgentIds must be a list of agent ids (non-empty strings)"),
        ({"bolnaAgentIds": ["a1", 7]}, "bolnaAgentIds must be a list of agent ids (non-empty strings)"),
        ({"bolnaAgentIds": ["a1", " "]}, "bolnaAgentIds must be a list of agent ids (non-empty strings)"),
        ({"phoneRegion": "XX"}, "phoneRegion must be a two-letter region code such as IN or US (got 'XX')"),
        ({"phoneRegion": 91}, "phoneRegion must be a region code such as IN or US"),
        ({"callsync": {"llmBatchLimit": 0}}, "callsync.llmBatchLimit must be a whole number of at least 1 (got 0)"),
        ({"callsync": {"llmBatchLimit": "5"}}, "callsync.llmBatchLimit must be a whole number of at least 1 (got '5')"),
        ({"callsync": {"llmBatchLimit": True}}, "callsync.llmBatchLimit must be a whole number of at least 1 (got True)"),
        ({"callsync": {"bolnaRequestsPerMinute": 2.5}},
         "callsync.bolnaRequestsPerMinute must be a whole number of at least 1 (got 2.5)"),
        ({"callsync": {"bolnaRequestsPerMinute": -10}},
         "callsync.bolnaRequestsPerMinute must be a whole number of at least 1 (got -10)"),
        ({"bolnaApiKey": 12345}, "bolnaApiKey is not a string"),
        ({"bolnaApiKey": "   "}, "bolnaApiKey is missing or empty"),
        ({"groqApiKey": ["gsk"]}, "groqApiKey is not a string"),
    ])
    def test_a_malformed_account_is_skipped_and_the_others_load(self, db, fields, reason):
        db.users.insert_many([account("bad") | fields, account("good")])
        loaded = load(db, ACCOUNTS_FILTER="{}")
        assert ids(loaded) == ["good"]
        assert [(s.account_id, s.reason) for s in loaded.skipped] == [("bad", reason)]

    def test_no_two_accounts_ids_make_the_same_record_id(self, db):
        """Issue 25: records' ids are `account:value` (local_id); "acme" + ":x" and "acme:" + "x",
        or an ObjectId and the string that spells it, would be one id, a record of one account
        shadowing the other's. Such an account is skipped, with its reason; the others serve on,
        their records' ids unchanged."""
        oid = ObjectId()
        db.users.insert_many([account("acme"), account("acme:"), account(oid), account(str(oid)), account(7),
                              account("beta")])
        with pytest.raises(UnusableAccount, match="spells another account's ObjectId"):
            AccountSource(mongodb_settings(), db).find(str(oid))

        loaded = load(db)

        assert sorted(map(str, ids(loaded))) == sorted(["acme", "beta", str(oid)])
        assert {s.account_id: s.reason for s in loaded.skipped} == {
            "acme:": "_id must not contain ':': it ends the account's part of its records' ids",
            str(oid): "_id is a string that spells another account's ObjectId: their records' ids would be one",
            7: "_id must be an ObjectId or a non-empty string"}
        values = ["x", ":x", "x:", "", "a:b"]
        made = [local_id(account.id, value) for account in loaded.accounts for value in values]
        assert len(set(made)) == len(made)
        assert local_id("acme", "call-1") == "acme:call-1" and local_id(oid, "c") == f"{oid}:c"  # as before

    def test_keys_never_reach_the_log_nor_a_repr(self, db, caplog):
        wrong = encrypt(OTHER_SECRET, "bn-secret-wrong")
        good = encrypt(NEW_SECRET, "bn-secret-good")
        groq = encrypt(NEW_SECRET, "gsk_secret_groq")
        db.users.insert_many([account("wrong", key=wrong), account("good", key=good, groqApiKey=groq),
                              account("plain", key="bn-secret-plain"), account("bad-region", key=good, phoneRegion="ZZ")])
        with caplog.at_level(logging.DEBUG):
            loaded = load(db, ACCOUNT_KEYS_SECRET=NEW_SECRET)
            AccountSource(load_settings({"ACCOUNT_SOURCE": "mongodb", "ACCOUNT_KEYS_SECRET": NEW_SECRET}), db).load()
        assert ids(loaded) == ["good"] and len(loaded.skipped) == 3
        # The driver's own DEBUG log of its commands holds the documents it read, keys included,
        # whoever reads them: that is for the logging set-up to keep quiet, not this source.
        records = [r for r in caplog.records if not r.name.startswith("pymongo")]
        shown = [r.getMessage() for r in records] + [repr(loaded), str(loaded)]
        assert len(records) == 6
        for secret in (wrong, good, groq, "bn-secret-wrong", "bn-secret-good", "gsk_secret_groq", "bn-secret-plain",
                       NEW_SECRET):
            assert not any(secret in text for text in shown), secret
        assert "good" in repr(loaded.accounts[0])


# ---- everything that needs no database

def test_a_account_shows_its_id_and_never_its_keys():
    account = Account(id=ObjectId("65a000000000000000000001"), bolna_api_key="bn-secret", groq_api_key="gsk_secret",
                    agent_ids=("a1",))
    assert "bn-secret" not in repr(account) and "gsk_secret" not in repr(account) and "a1" in repr(account)
    assert account.label == "65a000000000000000000001"
    fingerprint = account.key_fingerprint
    assert len(fingerprint) == 16 and int(fingerprint, 16) >= 0 and "bn-secret" not in fingerprint
    assert Account(id="other", bolna_api_key="bn-secret").key_fingerprint == fingerprint
    assert Account(id=account.id, bolna_api_key="bn-secret2").key_fingerprint != fingerprint


def test_read_path_follows_dots_and_stops_at_anything_but_an_object():
    document = {"a": {"b": {"c": 1}, "list": [{"c": 2}]}, "s": "text"}
    assert read_path(document, "a.b.c") == 1 and read_path(document, "a.b") == {"c": 1}
    assert read_path(document, "a.list.c") is None and read_path(document, "s.c") is None
    assert read_path(document, "missing.c") is None


def test_the_projection_reads_only_the_mapped_fields_without_path_collisions():
    assert projection({"x": "callsync.a", "y": "callsync.b", "z": "key"}) == {"callsync.a": 1, "callsync.b": 1, "key": 1}
    # MongoDB refuses `callsync` with `callsync.a` in one projection: the parent covers the child.
    assert projection({"x": "callsync", "y": "callsync.a", "z": "callsyncs.b"}) == {"callsync": 1, "callsyncs.b": 1}


# ---- settings

def test_account_settings_default_to_one_account_from_the_environment():
    settings = load_settings({})
    assert settings.account_source == "env" and settings.accounts_collection == "users"
    assert settings.account_keys_secret is None
    assert settings.account_fields["llmBatchLimit"] == "callsync.llmBatchLimit"
    assert settings.accounts_query == {"bolnaApiKey": {"$nin": [None, ""]},
                                      "subscription.status": {"$in": ["active", "trial"]}}


def test_the_default_filter_follows_the_key_field_and_a_given_filter_wins():
    settings = load_settings({"ACCOUNT_FIELDS": '{"bolnaApiKey": " bolna.key "}'})
    assert settings.account_fields["bolnaApiKey"] == "bolna.key" and settings.account_fields["agentIds"] == "bolnaAgentIds"
    assert settings.accounts_query["bolna.key"] == {"$nin": [None, ""]} and "bolnaApiKey" not in settings.accounts_query
    # Built directly (tests, demo), the default follows the map just the same.
    assert "k" in Settings(account_fields={**settings.account_fields, "bolnaApiKey": "k"}).accounts_query
    given = load_settings({"ACCOUNT_FIELDS": '{"bolnaApiKey": "bolna.key"}', "ACCOUNTS_FILTER": '{"plan": "pro"}'})
    assert given.accounts_query == {"plan": "pro"}


@pytest.mark.parametrize("variable,value,expected", [
    ("ACCOUNT_SOURCE", "crm", "must be env"),
    ("ACCOUNTS_FILTER", "{plan: pro}", ""),
    ("ACCOUNTS_FILTER", '["plan"]', "must be a JSON object"),
    ("ACCOUNT_FIELDS", "not json", ""),
    ("ACCOUNT_FIELDS", '{"bolnaKey": "x"}', "unknown field name(s) 'bolnaKey'"),
    ("ACCOUNT_FIELDS", '{"agentIds": "a..b"}', "the path of 'agentIds'"),
    ("ACCOUNT_FIELDS", '{"agentIds": "$x"}', "the path of 'agentIds'"),
    ("ACCOUNT_FIELDS", '{"agentIds": 5}', "the path of 'agentIds'"),
    ("ACCOUNTS_COLLECTION", "system.users", "collection name"),
])
def test_bad_account_settings_name_the_variable(variable, value, expected):
    with pytest.raises(ConfigError, match=f"^{variable} is invalid") as raised:
        load_settings({variable: value})
    assert expected in str(raised.value)


@pytest.mark.parametrize("secret,position", [
    ("not-a-fernet-key-but-long-enough-to-look-like-one", "key 1 of 1"),
    (f"{NEW_SECRET},{NEW_SECRET[:-4]}", "key 2 of 2"),
    (NEW_SECRET.replace("=", "") + "!!", "key 1 of 1"),
])
def test_an_invalid_secret_is_refused_at_start_up_without_showing_it(secret, position):
    with pytest.raises(ConfigError) as raised:
        load_settings({"ACCOUNT_KEYS_SECRET": secret})
    message = str(raised.value)
    assert message.startswith("ACCOUNT_KEYS_SECRET is invalid") and position in message
    assert not any(part.strip() and part.strip() in message for part in secret.split(","))
    # Settings built directly are checked when the source starts.
    with pytest.raises(ConfigError, match="^ACCOUNT_KEYS_SECRET is invalid") as raised:
        AccountSource(Settings(account_source="mongodb", account_keys_secret=secret), db=object())
    assert not any(part.strip() and part.strip() in str(raised.value) for part in secret.split(","))


def test_the_secret_is_masked_in_settings():
    settings = load_settings({"ACCOUNT_KEYS_SECRET": f" {NEW_SECRET} , {OLD_SECRET} "})
    assert settings.account_keys_secret == f"{NEW_SECRET},{OLD_SECRET}"
    assert NEW_SECRET not in repr(settings) and NEW_SECRET not in str(describe(settings))
    assert describe(settings)["account_keys_secret"] is True
