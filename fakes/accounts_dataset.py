"""Many Bolna organisations' data at once, for the multi-account fake (`FakeBolna.serving`).

Each account is a `fakes.dataset.generate` set of its own, under its own key and its own agent
phone numbers. With `shared` on, neighbouring accounts (0 and 1, 2 and 3, ...) also share on
purpose what real organisations can share: a customer who called both, and an execution id (ids
are opaque strings, integers in some of Bolna's examples), so a daemon serving many accounts is
tested on keeping them apart.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timezone

from fakes.dataset import generate


@dataclass(frozen=True)
class AccountData:
    api_key: str
    label: str  # a short name for logs and benchmark tables; not derived from the key
    agents: list[dict]
    executions: list[dict]


def customer_number(execution: dict) -> str:
    """The customer's side of a call: the callee of an outbound call, the caller of an inbound one."""
    telephony = execution["telephony_data"]
    return telephony["to_number"] if telephony["call_type"] == "outbound" else telephony["from_number"]


def accounts_dataset(n_accounts: int, agents_per_account: int = 2, calls_per_agent: int = 20, *,
                     seed: int = 1, now: datetime | None = None, span_days: float = 6.0,
                     transcript_chars: int = 600, shared: bool = True,
                     shared_ratio: float = 0.05) -> list[AccountData]:
    """`n_accounts` accounts, deterministic for `seed` (and `now`, which defaults to the clock).

    With `shared`, in each pair of neighbouring accounts about `shared_ratio` of the second one's
    calls take an execution id of the first's, and as many others take a customer number of the
    first's (each twin is otherwise the second account's own call, so a mix-up shows).
    """
    rng = random.Random(seed)
    now = now or datetime.now(timezone.utc)
    accounts = []
    for index in range(n_accounts):
        api_key = f"bn-{rng.getrandbits(128):032x}"
        agents, executions = generate(agents_per_account, calls_per_agent, seed=rng.getrandbits(64), now=now,
                                      span_days=span_days, transcript_chars=transcript_chars)
        _own_agent_numbers(rng, agents, executions)
        accounts.append(AccountData(api_key, f"acct-{index:04d}", agents, executions))
    if shared:
        for first, second in zip(accounts[0::2], accounts[1::2]):
            _share(rng, first.executions, second.executions, shared_ratio)
    return accounts


def _own_agent_numbers(rng: random.Random, agents: list[dict], executions: list[dict]) -> None:
    """Each organisation calls from its own numbers (`generate` gives every set the same few)."""
    numbers = {agent["id"]: f"+9180{rng.randrange(10**8):08d}" for agent in agents}
    for execution in executions:
        telephony = execution["telephony_data"]
        side = "from_number" if telephony["call_type"] == "outbound" else "to_number"
        telephony[side] = numbers[execution["agent_id"]]


def _share(rng: random.Random, first: list[dict], second: list[dict], ratio: float) -> None:
    count = min(max(1, round(ratio * len(second))), len(first), len(second) // 2)
    chosen = rng.sample(range(len(second)), 2 * count)
    for target, source in zip(chosen[:count], rng.sample(first, count)):
        record = second[target]
        old_id, new_id = record["id"], source["id"]
        telephony = record["telephony_data"]
        if telephony.get("recording_url"):
            telephony["recording_url"] = telephony["recording_url"].replace(old_id, new_id)
        record["id"] = new_id
    for target, source in zip(chosen[count:], rng.sample(first, count)):
        telephony = second[target]["telephony_data"]
        side = "to_number" if telephony["call_type"] == "outbound" else "from_number"
        telephony[side] = customer_number(source)
