import logging
import subprocess
import sys

import pytest

from utils.config import DEFAULT_PRICES, VARIABLES, ConfigError, Price, Settings, describe, load_settings, secret_texts
from utils.logging import redact


def test_defaults_from_an_empty_environment():
    settings = load_settings({})
    assert settings.sync_interval_minutes == 5 and settings.llm_calls_per_run == 10
    assert settings.min_transcript_chars == 15 and settings.default_phone_region == "IN"
    assert settings.bolna_base_url == "https://api.bolna.ai" and settings.bolna_agent_ids == ()


def test_lists_and_numbers_are_parsed():
    settings = load_settings({"BOLNA_AGENT_IDS": "a, b,,c", "GROQ_API_KEY": "k1,k2", "LLM_CALLS_PER_RUN": "3",
                              "DEFAULT_PHONE_REGION": "us", "BOLNA_BASE_URL": "http://127.0.0.1:9/",
                              "ANALYSIS_EXTRA_FIELDS": '[{"name": "Budget", "description": "stated budget"}]'})
    assert settings.bolna_agent_ids == ("a", "b", "c") and settings.groq_api_keys == ("k1", "k2")
    assert settings.llm_calls_per_run == 3 and settings.default_phone_region == "US"
    assert settings.bolna_base_url == "http://127.0.0.1:9"
    assert settings.analysis_extra_fields[0].name == "Budget"



def test_llm_batch_limit_is_still_read_as_the_former_name_of_llm_calls_per_run_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="utils.config"):
        assert load_settings({"LLM_BATCH_LIMIT": "3"}).llm_calls_per_run == 3
    assert "LLM_BATCH_LIMIT is deprecated: it is read as LLM_CALLS_PER_RUN" in caplog.text
    assert load_settings({"LLM_BATCH_LIMIT": "3", "LLM_CALLS_PER_RUN": "7"}).llm_calls_per_run == 7
    with pytest.raises(ConfigError, match="LLM_BATCH_LIMIT is invalid"):
        load_settings({"LLM_BATCH_LIMIT": "-1"})


@pytest.mark.parametrize("former,value,field,expected", [
    ("TENANT_SOURCE", "mongodb", "account_source", "mongodb"),
    ("TENANTS_COLLECTION", "orgs", "accounts_collection", "orgs"),
    ("TENANTS_FILTER", '{"plan": "pro"}', "accounts_filter", {"plan": "pro"}),
    ("TENANT_LEASE_SECONDS", "90", "account_lease_seconds", 90),
    ("TENANT_POLL_SECONDS", "7", "account_poll_seconds", 7),
    ("TENANT_CONCURRENCY", "2", "account_concurrency", 2),
    ("TENANT_REFRESH_SECONDS", "30", "account_refresh_seconds", 30),
])
def test_the_accounts_settings_are_still_read_under_their_former_tenant_names(former, value, field, expected, caplog):
    """The code says *account* (docs/architecture.md, Glossary); deployments configured with the
    TENANT_ spelling keep working, warned."""
    with caplog.at_level(logging.WARNING, logger="utils.config"):
        assert getattr(load_settings({former: value}), field) == expected
    assert f"{former} is deprecated" in caplog.text

@pytest.mark.parametrize("variable,value", [
    ("SYNC_INTERVAL_MINUTES", "0"), ("SYNC_INTERVAL_MINUTES", "five"), ("DEFAULT_PHONE_REGION", "XX"),
    ("MONGODB_URI", "localhost:27017"), ("BOLNA_BASE_URL", "api.bolna.ai"), ("LOG_LEVEL", "LOUD"),
    ("ANALYSIS_EXTRA_FIELDS", "{not json"), ("ANALYSIS_EXTRA_FIELDS", '[{"name": "x", "type": "date"}]'),
    ("HEALTH_PORT", "70000"), ("ANALYSIS_EXTRA_FIELDS", '[{"name": "a.b"}]'),
    ("ANALYSIS_EXTRA_FIELDS", '[{"name": "$x"}]'), ("ANALYSIS_EXTRA_FIELDS", '[{"name": "summary"}]'),
    ("ANALYSIS_EXTRA_FIELDS", '[{"name": "Budget"}, {"name": "Budget"}]'),
    ("STATUS_PRECEDENCE", "Booked>>Contacted"),
    ("STATUS_PRECEDENCE", "Booked>Interested=Booked"),
])
def test_bad_values_name_the_variable(variable, value):
    with pytest.raises(ConfigError, match=f"^{variable} is invalid"):
        load_settings({variable: value})


def test_secrets_never_appear_in_errors_or_descriptions():
    with pytest.raises(ConfigError) as raised:
        load_settings({"MONGODB_URI": "postgres://user:hunter2@db"})
    assert "hunter2" not in str(raised.value)
    settings = load_settings({"BOLNA_API_KEY": "bn-secret-123", "GROQ_API_KEY": "gsk_secret"})
    text = repr(settings) + str(describe(settings))
    assert "bn-secret-123" not in text and "gsk_secret" not in text
    assert describe(settings)["bolna_api_key"] is True


def test_status_precedence_lists_ranks_highest_first():
    settings = load_settings({"STATUS_PRECEDENCE": " Booked > Callback = Interested > No Answer "})
    assert settings.status_precedence == (("Booked",), ("Callback", "Interested"), ("No Answer",))
    assert load_settings({}).status_precedence[0] == ("Booked",)


def test_llm_prices_extend_the_built_in_table():
    settings = load_settings({"LLM_PRICES": '{"my/model": [1, 2.5]}'})
    assert settings.llm_prices["my/model"] == Price(1.0, 2.5)
    assert settings.llm_prices["openai/gpt-oss-20b"] == DEFAULT_PRICES["openai/gpt-oss-20b"]


@pytest.mark.parametrize("raw", ['["x"]', '{"m": [1]}', '{"m": [-1, 2]}', '{"m": ["a", 2]}', "{bad"])
def test_malformed_llm_prices_are_refused(raw):
    with pytest.raises(ConfigError, match="LLM_PRICES"):
        load_settings({"LLM_PRICES": raw})


def test_privacy_settings_are_off_by_default_and_the_hash_key_is_a_secret():
    assert load_settings({}).transcript_retention_days is None and load_settings({}).record_retention_days is None
    settings = load_settings({"TRANSCRIPT_RETENTION_DAYS": "30", "RECORD_RETENTION_DAYS": "365",
                              "PRIVACY_HASH_KEY": "k3y-0f-enough-length-42"})
    assert (settings.transcript_retention_days, settings.record_retention_days) == (30, 365)
    assert "k3y-0f-enough-length-42" not in repr(settings) + str(describe(settings))
    with pytest.raises(ConfigError, match="^PRIVACY_HASH_KEY is invalid: must be at least") as raised:
        load_settings({"PRIVACY_HASH_KEY": "tiny-key"})
    assert "tiny-key" not in str(raised.value)
    with pytest.raises(ConfigError, match="^TRANSCRIPT_RETENTION_DAYS is invalid"):
        load_settings({"TRANSCRIPT_RETENTION_DAYS": "0"})


def test_many_accounts_settings_are_checked():
    settings = load_settings({"ACCOUNT_SOURCE": "mongodb", "ACCOUNT_LEASE_SECONDS": "30", "ACCOUNT_CONCURRENCY": "8",
                              "LLM_GLOBAL_LIMIT": "500"})
    assert (settings.account_lease_seconds, settings.account_concurrency, settings.llm_global_limit) == (30, 8, 500)
    with pytest.raises(ConfigError, match="ACCOUNT_LEASE_SECONDS"):
        load_settings({"ACCOUNT_LEASE_SECONDS": "5"})  # renewed every third: shorter is lost on a slow round trip
    # Each account's webhook URL derives from WEBHOOK_TOKEN (worker/webhook_listener.py).
    assert load_settings({"ACCOUNT_SOURCE": "mongodb", "WEBHOOK_PORT": "8080",
                          "WEBHOOK_TOKEN": "t" * 32}).webhook_port == 8080


def test_the_settings_load_no_service_or_worker_module():
    """utils/ sits below services/ and worker/: reading the settings (price table included) must
    not pull them in, or an import circle through them is one edit away."""
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, utils.config; "
                               "print(sorted(m for m in sys.modules if m.split('.')[0] in ('services', 'worker')))"],
        capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"


def test_every_declared_secret_is_masked_in_logs_whole_and_by_its_parts():
    secret = [f.name for f in VARIABLES.values() if f.metadata["secret"]]
    assert {"mongodb_uri", "bolna_api_key", "groq_api_keys", "webhook_token", "account_keys_secret"} <= set(secret)
    settings = Settings().with_overrides(**{
        name: (f"s3cret-{name}-1", f"s3cret-{name}-2") if name == "groq_api_keys"
        else f"s3cret-{name}-1,s3cret-{name}-2" for name in secret})
    line = " ".join(f"{name}: s3cret-{name}-1 then s3cret-{name}-2" for name in secret)
    assert "s3cret" not in redact(line, secret_texts(settings))
    assert secret_texts(Settings()) == ()
