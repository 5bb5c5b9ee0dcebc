"""The webhook settings: off by default, Bolna's senders by default, checked at start-up."""
import pytest

from utils.config import BOLNA_SENDER_IPS, ConfigError, describe, load_settings

TOKEN = "a" * 24


def test_off_by_default_with_bolnas_senders_allowed():
    settings = load_settings({})
    assert settings.webhook_port is None and settings.webhook_token is None
    assert settings.webhook_allowed_ips == BOLNA_SENDER_IPS and settings.webhook_trusted_proxies == ()
    assert settings.webhook_max_body_bytes == 1_048_576
    assert settings.webhook_max_waiting == 5000


def test_parsed_and_the_token_kept_out_of_descriptions():
    settings = load_settings({"WEBHOOK_PORT": "8090", "WEBHOOK_TOKEN": TOKEN, "WEBHOOK_ALLOWED_IPS": "any",
                              "WEBHOOK_TRUSTED_PROXIES": "127.0.0.1, 10.0.0.0/8",
                              "WEBHOOK_PUBLIC_URL": "https://hooks.example.com/", "WEBHOOK_MAX_WAITING": "200"})
    assert (settings.webhook_port, settings.webhook_allowed_ips) == (8090, None)
    assert settings.webhook_trusted_proxies == ("127.0.0.1", "10.0.0.0/8")
    assert settings.webhook_public_url == "https://hooks.example.com"
    assert settings.webhook_max_waiting == 200
    assert describe(settings)["webhook_token"] is True and TOKEN not in repr(settings)


@pytest.mark.parametrize("variables, says", [
    ({"WEBHOOK_PORT": "8090"}, "WEBHOOK_TOKEN is not"),
    ({"WEBHOOK_TOKEN": "short"}, "WEBHOOK_TOKEN is invalid"),
    ({"WEBHOOK_TOKEN": "a" * 23 + "/"}, "WEBHOOK_TOKEN is invalid"),
    ({"WEBHOOK_ALLOWED_IPS": "13.203.39.153, bolna.ai"}, "WEBHOOK_ALLOWED_IPS is invalid"),
    ({"WEBHOOK_TRUSTED_PROXIES": "10.0.0.0/33"}, "WEBHOOK_TRUSTED_PROXIES is invalid"),
    ({"WEBHOOK_PUBLIC_URL": "hooks.example.com"}, "WEBHOOK_PUBLIC_URL is invalid"),
    ({"WEBHOOK_MAX_WAITING": "0"}, "WEBHOOK_MAX_WAITING is invalid"),
])
def test_bad_values_are_refused_naming_the_variable(variables, says):
    with pytest.raises(ConfigError, match=says) as refused:
        load_settings(variables)
    assert "short" not in str(refused.value)  # a secret's value is never shown
