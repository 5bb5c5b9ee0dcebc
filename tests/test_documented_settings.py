"""Configuration documented once: every environment variable the code reads is in .env.example and
in a row of the README's tables (and nothing is documented that the code does not read), and every
default shown (README, docs/, .env.example) is the one its declaration in utils/config.py gives."""
import re
from pathlib import Path

from utils.config import VARIABLES, Settings

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [path for folder in ("worker", "services", "utils", "models") for path in (ROOT / folder).rglob("*.py")]
# Set by systemd for the unit, never configured: documented in the README only.
SET_BY_SYSTEMD = {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"}


def read_by_the_code() -> set[str]:
    """The settings, every os.environ read, and the variables docker-compose.yml interpolates."""
    direct = {name for path in SOURCES
              for name in re.findall(r"""os\.environ(?:\.get\(|\[)\s*["']([A-Z][A-Z0-9_]*)["']""", path.read_text())}
    compose = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", (ROOT / "docker-compose.yml").read_text()))
    return set(VARIABLES) | direct | compose


def in_readme_tables() -> set[str]:
    first_cells = re.findall(r"^\|([^|\n]*)\|", (ROOT / "README.md").read_text(), re.M)
    return {name for cell in first_cells for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", cell)}


def in_env_example() -> set[str]:
    return set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M))


def test_the_scan_finds_the_variables_read_outside_the_settings():
    assert {"CALLSYNC_VERSION", "NOTIFY_SOCKET", "WATCHDOG_USEC", "MONGODB_URI"} <= read_by_the_code()


def test_every_variable_is_in_a_readme_table():
    assert read_by_the_code() - in_readme_tables() == set()


def test_every_configurable_variable_is_in_env_example():
    assert read_by_the_code() - SET_BY_SYSTEMD - in_env_example() == set()


def test_nothing_documented_is_not_read():
    documented = in_env_example() | {name for name in in_readme_tables() if name.isupper() and "_" in name}
    assert documented - read_by_the_code() == set()


# Values .env.example shows as an example to edit, not as the default.
EXAMPLES_IN_ENV_EXAMPLE = {"MONGODB_URI", "ANALYSIS_EXTRA_FIELDS"}


def declared_default(variable: str) -> object:
    return getattr(Settings(), VARIABLES[variable].name)


def parsed(variable: str, text: str) -> object:
    return VARIABLES[variable].metadata["parse"](text)


def documented_defaults() -> list[tuple[str, str]]:
    """(variable, its default cell) for each setting in a `| variable | default |` table of the
    README or docs/; a row of two settings (`A` / `B` | `1` / `2`) gives each its part of the cell."""
    pairs, in_table = [], False
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for line in path.read_text().splitlines():
            in_table = line.startswith("| variable | default |") or (in_table and line.startswith("|"))
            cells = line.split("|")
            if not in_table or len(cells) < 4:
                continue
            names = re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[1])
            parts = cells[2].split(" / ") if len(names) > 1 else [cells[2]]
            pairs += [(name, part.strip()) for name, part in zip(names, parts) if name in VARIABLES]
    return pairs


def test_the_docs_show_each_declared_default():
    """A default cell that is one literal value parses to the declared default; one that says
    there is none (— or none) stands for a default that is empty or None."""
    checked = 0
    for variable, cell in documented_defaults():
        literal = re.fullmatch(r"`([^`]*)`", cell)
        if literal:
            assert parsed(variable, literal.group(1)) == declared_default(variable), variable
            checked += 1
        elif cell.startswith("—") or cell == "none":
            assert not declared_default(variable), variable
            checked += 1
    assert checked >= 70


def test_env_example_shows_each_declared_default():
    checked = 0
    for variable, text in re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=(.*)$", (ROOT / ".env.example").read_text(), re.M):
        if variable in VARIABLES and text.strip() and variable not in EXAMPLES_IN_ENV_EXAMPLE:
            assert parsed(variable, text) == declared_default(variable), variable
            checked += 1
    assert checked >= 50
