"""The docs hold together: every relative link in README.md and docs/ resolves (files and
headings), the README stays a front door, and the agent's API reference is what the generator
makes from the OpenAPI document today, so it cannot drift from the code.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType
from urllib.parse import unquote

import pytest

from backends.agent.openapi import openapi_spec
from support.helpers import REPO_ROOT

README_MAX_LINES = 200
GENERATOR = REPO_ROOT / "assets" / "make_api_reference.py"
API_REFERENCE = REPO_ROOT / "docs" / "agent-api.md"
AGENT_PAGE = REPO_ROOT / "docs" / "agent.md"

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
# [text](target) and ![alt](target); the text may hold one level of brackets (an image).
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation other than '-'
    and '_' removed, spaces turned into '-'."""
    text = LINK.sub(
        lambda m: m.group(0)[m.group(0).index("[") + 1 : m.group(0).index("](")], heading
    )
    text = text.replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading anchor of a Markdown file, with GitHub's -1, -2 for repeated headings."""
    seen: dict[str, int] = {}
    found = set()
    for _, line in prose_lines(text):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every link and image outside code."""
    found = []
    for number, line in prose_lines(text):
        masked = INLINE_CODE.sub("code", line)
        for match in LINK.finditer(masked):
            found.append((number, match.group(1).strip("<>")))
    return found


def broken_links(files: list[Path], root: Path) -> list[str]:
    """One message per relative link whose file or heading does not exist."""
    broken = []
    for file in files:
        text = file.read_text(encoding="utf-8")
        for number, target in links(text):
            if SCHEME.match(target):
                continue  # http(s), mailto: not ours to check
            where = f"{file.relative_to(root)}:{number}: {target}"
            path_part, _, anchor = target.partition("#")
            destination = (file.parent / unquote(path_part)).resolve() if path_part else file
            if not destination.exists():
                broken.append(f"{where}: no such file {destination}")
                continue
            if anchor and destination.suffix == ".md" and destination.is_file():
                known = anchors(destination.read_text(encoding="utf-8"))
                if unquote(anchor).lower() not in known:
                    broken.append(f"{where}: no heading #{anchor} in {destination.name}")
    return broken


def doc_files() -> list[Path]:
    return [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").rglob("*.md"))]


def load_generator() -> ModuleType:
    """assets/ is not a package: load the script from its file."""
    spec = importlib.util.spec_from_file_location("make_api_reference", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_relative_link_in_readme_and_docs_resolves() -> None:
    files = doc_files()
    assert len(files) > 1, "docs/ has no pages"
    broken = broken_links(files, REPO_ROOT)
    assert not broken, f"{len(broken)} broken link(s):\n" + "\n".join(broken)


def test_a_broken_link_or_heading_is_reported_with_all_the_others(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text("# A page\n\n## Some `code` (here)\n")
    (tmp_path / "pic.svg").write_text("<svg/>")
    (tmp_path / "README.md").write_text(
        "# Title\n\n"
        "[ok](docs/page.md) [ok anchor](docs/page.md#some-code-here) ![ok](pic.svg)\n"
        "[missing](docs/nope.md) ![missing image](img/none.svg)\n"
        "[bad anchor](docs/page.md#no-such-heading) [bad local](#nowhere) [ok local](#title)\n"
        "[web](https://example.invalid/x) [mail](mailto:a@example.invalid) `[code](gone.md)`\n"
        "```\n[fenced](gone.md)\n```\n"
    )
    broken = broken_links([tmp_path / "README.md"], tmp_path)
    assert [message.split(": ")[0] + ": " + message.split(": ")[1] for message in broken] == [
        "README.md:4: docs/nope.md",
        "README.md:4: img/none.svg",
        "README.md:5: docs/page.md#no-such-heading",
        "README.md:5: #nowhere",
    ]


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("The agent (`devlab agent`)", "the-agent-devlab-agent"),
        ("`[dpu]` and `[[dpu.endpoints]]`", "dpu-and-dpuendpoints"),
        ("GET /v1/jobs/{id}/events", "get-v1jobsidevents"),
        ("Security: TLS for a real network", "security-tls-for-a-real-network"),
        ("ModuleUIDs and granularity", "moduleuids-and-granularity"),
        ("snake_case stays", "snake_case-stays"),
    ],
)
def test_heading_anchors_follow_github_rules(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor


def test_repeated_headings_get_numbered_anchors() -> None:
    assert anchors("# A\n## Where\n## Where\n```\n# not a heading\n```\n") == {
        "a",
        "where",
        "where-1",
    }


def test_agent_api_reference_is_generated_from_the_openapi_document() -> None:
    expected = load_generator().render(openapi_spec())
    current = API_REFERENCE.read_text(encoding="utf-8") if API_REFERENCE.is_file() else ""
    assert current == expected, (
        "docs/agent-api.md differs from the agent's OpenAPI document: "
        "run python assets/make_api_reference.py"
    )


def test_agent_page_section_is_generated_from_the_openapi_document() -> None:
    """docs/agent.md's settings, statuses and events are the document's, not a copy of them."""
    generator = load_generator()
    page = AGENT_PAGE.read_text(encoding="utf-8")
    assert page.count(generator.BEGIN) == 1 and page.count(generator.END) == 1
    assert generator.with_agent_section(page, openapi_spec()) == page, (
        "the generated section of docs/agent.md differs from the agent's OpenAPI document: "
        "run python assets/make_api_reference.py"
    )


def test_api_reference_covers_every_operation_of_the_document() -> None:
    text = API_REFERENCE.read_text(encoding="utf-8")
    for path, item in openapi_spec()["paths"].items():
        for method in (key for key in item if key != "parameters"):
            assert f"### {method.upper()} {path}\n" in text


def test_readme_is_a_front_door_not_the_manual() -> None:
    lines = (REPO_ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines (at most {README_MAX_LINES}): move details to docs/"
    )
