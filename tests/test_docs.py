"""Comments and docs cite only what is in the repository: differences from the seed are
cited by the name of their entry in docs/compat.md, never by a section of a document
outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMPAT = ROOT / "docs" / "compat.md"

# Built from pieces so that this file does not match itself.
_OUTSIDE = re.compile(
    "|".join(
        [
            r"\b[QB]" + r"-\d+\b",  # the seed spec's quirk and bug ids
            "seed" + "-spec",
            "shared" + "/design",
            r"(?<!RFC \d{4} )(?<!RFC \d{3} )" + "\u00a7",  # a section sign not of an RFC
        ]
    )
)


def _sources() -> list[Path]:
    found: list[Path] = [ROOT / "README.md"]
    for folder in ("src", "tests", "examples", "bench", "docs"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in {".py", ".md", ".mjs"} and "node_modules" not in path.parts:
                found.append(path)
    return [p for p in found if p.is_file() and p != Path(__file__).resolve()]


def _entry_names() -> list[str]:
    return re.findall(r"\*\*compat: ([^*]+?)\.\*\*", COMPAT.read_text())


def test_no_citation_of_a_document_outside_the_repository() -> None:
    hits = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in _sources()
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if _OUTSIDE.search(line)
    ]
    assert hits == []


def test_every_compat_citation_names_an_entry() -> None:
    names = _entry_names()
    assert "omitted responses are reported" in names  # the parse works
    unknown = []
    for path in _sources():
        if path == COMPAT:
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for match in re.finditer(r"compat: ([a-z][a-z0-9 -]*[a-z0-9])", line):
                # A name may wrap onto the next line: the part on this line must begin
                # one, or the line must go on past a whole name.
                cited = match.group(1)
                if not any(name.startswith(cited) or cited.startswith(name) for name in names):
                    unknown.append(f"{path.relative_to(ROOT)}:{number}: compat: {cited}")
    assert unknown == []
