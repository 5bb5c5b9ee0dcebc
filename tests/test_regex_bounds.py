"""Every regular expression of the product runs in linear time on hostile text (issue 25).

The patterns are found, not listed: every module-level compiled pattern of the product's packages
(a new one is covered the day it is added). For each, its character classes are read from the
pattern itself, one character standing for each way a character can be matched; the attacks are
long runs of each of them, alone and with each other one as a separator, and repeated units of up
to three of them. A pattern that backtracks over a run it cannot match costs the square of the
length: that is seconds at 8 KB and hours at 1 MB, so the many units are screened at 8 KB and
the runs, the separated runs and the screen's slowest units are then timed at 1 MB.
"""
from __future__ import annotations

import importlib
import itertools
import json
import pkgutil
import re
import string
import time
from re import _compiler as sre_compile, _parser as sre_parse  # noqa: the parse tree of a pattern

import pytest

from services.analyzer.prompt import PHONE_MASK, build_messages
from utils.config import Settings

PRODUCT_PACKAGES = ("models", "services", "utils", "worker")
MEGABYTE = 1_000_000
SCREEN_SIZE = 8_000
# Linear work on these sizes takes well under a millisecond per 8 KB and tens of milliseconds per
# MB; quadratic work takes seconds (8 KB) to hours (1 MB). The bounds sit far from both.
SCREEN_BOUND = 0.05
MEGABYTE_BOUND = 0.5
SLOWEST_UNITS_AT_FULL_SIZE = 5
# The characters tried against each class of a pattern: ASCII, and the Unicode a caller can send
# that the classes may treat apart (letters and digits of other scripts, other spaces, controls,
# a lone surrogate, an emoji).
CANDIDATES = (string.printable + "\x00\x1f\x7f" + "é" + "ß" + "٣" + "²" + "\u00a0" + "\u2028" + "\ud800"
              + "\U0001F600" + "İ" + "K")


def product_patterns() -> dict[str, re.Pattern]:
    """`module.NAME` -> every compiled pattern held at module level (also inside a tuple, list or
    dict) by a module of the product; one entry per distinct pattern."""
    found: dict[tuple[str, int], tuple[str, re.Pattern]] = {}
    for package_name in PRODUCT_PACKAGES:
        package = importlib.import_module(package_name)
        modules = [package] + [importlib.import_module(info.name)
                               for info in pkgutil.walk_packages(package.__path__, package_name + ".")]
        for module in modules:
            for name, value in vars(module).items():
                values = value.values() if isinstance(value, dict) else value if isinstance(value, (tuple, list)) else [value]
                for item in values:
                    if isinstance(item, re.Pattern) and isinstance(item.pattern, str):
                        found.setdefault((item.pattern, item.flags), (f"{module.__name__}.{name}", item))
    return dict(found.values())


PATTERNS = product_patterns()


def _character_nodes(parsed) -> list:
    """Every node of the parse tree that matches one character (a literal, a class, `.`)."""
    nodes = []
    for op, argument in parsed:
        if op in (sre_parse.LITERAL, sre_parse.NOT_LITERAL, sre_parse.IN, sre_parse.ANY):
            nodes.append((op, argument))
        for part in argument if isinstance(argument, (tuple, list)) else [argument]:
            for sub in part if isinstance(part, list) else [part]:
                if isinstance(sub, sre_parse.SubPattern):
                    nodes += _character_nodes(sub)
    return nodes


def atoms(pattern: re.Pattern) -> list[str]:
    """One character for each set of characters that every class of `pattern` treats alike,
    including one no class accepts (the break in a run)."""
    parsed = sre_parse.parse(pattern.pattern, pattern.flags)
    matchers = [sre_compile.compile(sre_parse.SubPattern(parsed.state, [node]), pattern.flags)
                for node in _character_nodes(parsed)]
    by_signature: dict[tuple[bool, ...], str] = {}
    for ch in CANDIDATES:
        by_signature.setdefault(tuple(m.fullmatch(ch) is not None for m in matchers), ch)
    return list(by_signature.values())


def attacks(pattern: re.Pattern) -> tuple[list[str], list[str]]:
    """(units timed at 1 MB: each class alone and with each separator; units screened at 8 KB:
    every sequence of up to three classes, and runs of eight of one class split by another)."""
    chars = atoms(pattern)
    runs = chars + [a + b for a, b in itertools.permutations(chars, 2)]
    screened = ["".join(unit) for size in (1, 2, 3) for unit in itertools.product(chars, repeat=size)]
    screened += [a * 8 + b for a, b in itertools.permutations(chars, 2)]
    return runs, screened


def _repeated(unit: str, size: int) -> str:
    return (unit * (size // len(unit) + 1))[:size]


def _seconds(pattern: re.Pattern, text: str) -> float:
    """Every match of `text`, as `sub` and `findall` walk them; `match` and `fullmatch` do less."""
    started = time.perf_counter()
    for _ in pattern.finditer(text):
        pass
    return time.perf_counter() - started


def _best_seconds(pattern: re.Pattern, text: str, bound: float) -> float:
    """The time of one scan; retried twice when over the bound, so a pause of a loaded machine
    is not taken for the pattern's work."""
    seconds = _seconds(pattern, text)
    for _ in range(2):
        if seconds <= bound:
            break
        seconds = min(seconds, _seconds(pattern, text))
    return seconds


def test_the_product_patterns_are_found():
    names = set(PATTERNS)
    assert {"services.analyzer.prompt._EMAIL_DOMAIN", "services.analyzer.prompt._PHONE",
            "utils.logging._NUMBER_RUN", "utils.logging._URL_CREDENTIALS",
            "services.analyzer.pacing._DURATION_PART", "models.execution._CONTROL"} <= names


def test_the_attacks_use_every_class_of_a_pattern():
    chars = atoms(re.compile(r"(?<![\w.:/-])\+?\(?\d[\d ().-]{6,}\d(?![\w:-])"))
    # A digit, a letter, each separator the classes treat apart, and one no class takes.
    assert {"0", "a", "!", "(", ")", "+", "-", ".", "/"} == set(chars)  # ":" is taken as a letter is


# What main had (issue 25): each took seconds on 8 KB of some unit, and hours on 1 MB.
QUADRATIC_ON_MAIN = {
    "e-mail": r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+",
    "phone in logs": r"(?<![\w.:/-])\+?\(?\d[\d ().-]{6,}\d(?![\w:-])",
    "URL credentials": r"(?i)([a-z][a-z0-9+.-]*://)[^/\s@]+@",
    "Groq reset duration": r"(\d+(?:\.\d+)?)(ms|h|m|s)",
}


@pytest.mark.parametrize("name", sorted(QUADRATIC_ON_MAIN))
def test_the_screen_catches_a_quadratic_pattern(name):
    pattern = re.compile(QUADRATIC_ON_MAIN[name])
    assert _first_slow_unit(pattern) is not None


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_pattern_runs_in_linear_time_on_hostile_text(name):
    pattern = PATTERNS[name]
    screen_times: dict[str, float] = {}
    slow = _first_slow_unit(pattern, screen_times)
    assert slow is None, f"{name}: {screen_times[slow]:.2f} s on {SCREEN_SIZE} characters of {slow!r} repeated"
    runs, _ = attacks(pattern)
    slowest = sorted(screen_times, key=screen_times.get, reverse=True)[:SLOWEST_UNITS_AT_FULL_SIZE]
    for unit in dict.fromkeys(runs + slowest):
        seconds = _best_seconds(pattern, _repeated(unit, MEGABYTE), MEGABYTE_BOUND)
        assert seconds < MEGABYTE_BOUND, f"{name}: {seconds:.2f} s on 1 MB of {unit!r} repeated"


def _first_slow_unit(pattern: re.Pattern, times: dict[str, float] | None = None) -> str | None:
    """The first screened unit that `pattern` takes too long on (8 KB of it), or None; `times`
    gets the time of each unit tried."""
    times = {} if times is None else times
    for unit in attacks(pattern)[1]:
        times[unit] = _best_seconds(pattern, _repeated(unit, SCREEN_SIZE), SCREEN_BOUND)
        if times[unit] >= SCREEN_BOUND:
            return unit
    return None


def test_a_huge_transcript_is_cut_before_it_is_masked():
    """1 MB of letters ahead of an address: the request is built at once (before, the address mask
    ran over the whole transcript, quadratic in a word's length)."""
    budget = 4_000
    transcript = "user: " + "a" * MEGABYTE + " write to me at someone@example.com or 98765 43210"
    started = time.perf_counter()
    prepared = _prepared(transcript, budget)
    assert time.perf_counter() - started < MEGABYTE_BOUND
    assert len(prepared) < budget + 100
    assert "someone@" not in prepared and "43210" not in prepared and prepared.endswith(PHONE_MASK)


def test_a_number_across_the_cut_is_masked_whole():
    """The kept ends are masked with what lies past the cut: no fragment of a number or address
    reaches the LLM."""
    budget = 1_000
    for offset in range(-30, 4):
        text = "x" * (budget // 2 + offset) + " +91 98765 43210 a.person@mail.example.com " + "y " * 2_000
        tail_text = "y " * 2_000 + " +91 98765 43210 a.person@mail.example.com" + "x" * (budget // 2 + offset)
        for prepared in (_prepared(text, budget), _prepared(tail_text, budget)):
            kept = re.sub(r"\[\.\.\. \d+ characters omitted \.\.\.\]", "", prepared)
            assert not re.search(r"\d\d", kept) and "person@" not in kept and "@mail" not in kept


def _prepared(transcript: str, budget: int) -> str:
    """The transcript as the request to the LLM carries it."""
    message = build_messages(transcript, Settings(transcript_char_budget=budget))[1]
    return json.loads(message["content"])["transcript"]
