"""`main.py webhook-url [--agent ID] [--apply] [--account ID]`: the URL to configure at Bolna for
this daemon's listener (WEBHOOK_PUBLIC_URL + the token path), and with `--apply` set on the agent
through Bolna's API (`PATCH /v2/agent/{id}`, `agent_config.webhook_url`). With many accounts the
URL is the account's own (its token derived from WEBHOOK_TOKEN, worker/webhook_listener.py) and
`--apply` uses the account's Bolna key. The URL holds the token: it is printed for the person who
asked, and never logged."""
from __future__ import annotations

import logging
import sys

from services.bolna_client import BolnaClient, BolnaError
from services.tenancy.tenant import Tenant
from utils.config import Settings
from worker.webhook_listener import PATH_PREFIX, account_token

log = logging.getLogger(__name__)


class WebhookUrlError(Exception):
    """What is missing to build or set the URL; the message says what to do."""


def check_settings(settings: Settings) -> None:
    """What any webhook URL needs, told before anything else is done."""
    if not settings.webhook_public_url:
        raise WebhookUrlError("WEBHOOK_PUBLIC_URL is not set: the listener's base URL as Bolna reaches it, "
                              "e.g. https://hooks.example.com (your reverse proxy; see the README, Webhooks)")
    if not settings.webhook_token:
        raise WebhookUrlError("WEBHOOK_TOKEN is not set: e.g. `openssl rand -hex 24`, the same the daemon runs with")


def webhook_url(settings: Settings, account: Tenant | None = None) -> str:
    """`account`: with many accounts, the one whose URL it is."""
    check_settings(settings)
    token = settings.webhook_token if account is None else account_token(settings.webhook_token, account.id)
    return f"{settings.webhook_public_url}{PATH_PREFIX}{token}"


def run_webhook_url(settings: Settings, agent_id: str | None, apply: bool, account: Tenant | None = None) -> int:
    url = webhook_url(settings, account)
    if not apply:
        print(url)
        if agent_id:
            print(f"(not changed yet: run again with --apply to set it on agent {agent_id})")
        return 0
    if not agent_id:
        raise WebhookUrlError("--apply needs --agent: the Bolna agent whose webhook URL to set")
    if account is not None:
        settings = settings.with_overrides(bolna_api_key=account.bolna_api_key)
    if not settings.bolna_api_key:
        raise WebhookUrlError("BOLNA_API_KEY is not set: --apply changes the agent through Bolna's API")
    client = BolnaClient.from_settings(settings)
    try:
        client.set_webhook_url(agent_id, url)
    except BolnaError as exc:
        print(f"callsync: Bolna did not set the webhook URL of agent {agent_id}: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    log.info("webhook URL of agent %s set to %s%s<token>", agent_id, settings.webhook_public_url, PATH_PREFIX,
             extra={"event": "webhook_url_set"})
    print(f"agent {agent_id}: webhook URL set to {url}")
    return 0
