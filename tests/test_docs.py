"""The README and docs/ point at files that exist, and every command they show in a code block is one its tool
accepts."""

import re
import shlex
from pathlib import Path

import pytest

from cvae_video import ablate, evaluate, make_gif, predict, train
from cvae_video.data import cli as data_cli

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
PARSERS = {"cvae-train": train.build_parser, "cvae-eval": evaluate.build_parser,
           "cvae-make-gif": make_gif.build_parser, "cvae-predict": predict.build_parser,
           "cvae-data": data_cli.build_parser, "cvae-ablate": ablate.build_parser}


def _links(page: Path) -> list[str]:
    return [m for m in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8"))
            if not re.match(r"[a-z]+:", m) and not m.startswith("#")]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_points_to_a_file(page):
    missing = [link for link in _links(page) if not (page.parent / link.split("#")[0]).exists()]
    assert not missing, f"{page.relative_to(ROOT)}: links to missing files: {missing}"


def _commands(page: Path) -> list[str]:
    """The cvae-* commands of a page's code blocks (lines indented by four spaces), one per `&&` part."""
    commands, pending = [], ""
    for line in page.read_text(encoding="utf-8").splitlines():
        if not line.startswith("    "):
            continue
        line = pending + line.strip()
        if line.endswith("\\"):   # continued on the next line
            pending = line[:-1] + " "
            continue
        pending = ""
        commands += [part.strip() for part in line.split("&&") if part.strip().startswith("cvae-")]
    return commands


def test_the_readme_shows_commands():
    commands = _commands(ROOT / "README.md")
    assert len(commands) >= 6 and any(c.startswith("cvae-train --config") for c in commands)


def test_the_command_line_page_shows_every_tool():
    shown = {c.split()[0] for c in _commands(ROOT / "docs" / "cli.md")}
    assert shown >= set(PARSERS) - {"cvae-ablate"}, f"docs/cli.md shows no example of {set(PARSERS) - shown}"


@pytest.mark.parametrize("command", sorted({c for page in PAGES for c in _commands(page)}))
def test_every_readme_command_parses(command):
    words = shlex.split(command.split(" > ")[0].split(" | ")[0], comments=True)
    parser = PARSERS[words[0]]()
    try:
        parser.parse_args(words[1:])
    except SystemExit as e:
        pytest.fail(f"`{command}`: {words[0]} refuses it (exit {e.code})")
