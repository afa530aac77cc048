"""paper/: the citations in main.tex and the entries in references.bib match one to one (no TeX needed)."""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "paper"

# \cite, \citep, \citet*, \nocite ... with up to two optional arguments: the keys, comma-separated.
CITE = re.compile(r"\\(?:no)?cite[a-zA-Z]*\*?\s*(?:\[[^\]]*\]\s*){0,2}\{([^}]*)\}")
ENTRY = re.compile(r"^\s*@\s*([A-Za-z]+)\s*[{(]\s*([^,\s]+)\s*,", re.MULTILINE)
NOT_ENTRIES = {"comment", "string", "preamble"}


def without_comments(tex: str) -> str:
    """The text with every %-comment removed (an escaped \\% stays)."""
    return "\n".join(re.sub(r"(?<!\\)%.*", "", line) for line in tex.splitlines())


def cited_keys(tex: str) -> set[str]:
    return {key.strip() for group in CITE.findall(without_comments(tex)) for key in group.split(",") if key.strip()}


def bib_keys(bib: str) -> list[str]:
    return [key for kind, key in ENTRY.findall(bib) if kind.lower() not in NOT_ENTRIES]


def test_the_parsers() -> None:
    tex = "a~\\cite{x, y} b \\citep[p.~3]{z} % \\cite{commented}\n100\\,\\% \\nocite{w}"
    assert cited_keys(tex) == {"x", "y", "z", "w"}
    assert bib_keys("@Article{a,\n}\n@comment{not, an entry}\n@misc( b ,\n)\n") == ["a", "b"]


def test_every_citation_has_an_entry_and_every_entry_is_cited() -> None:
    tex = (PAPER / "main.tex").read_text()
    bib = (PAPER / "references.bib").read_text()
    assert re.search(r"^\\bibliography\{references\}", tex, re.MULTILINE), "main.tex does not read references.bib"
    assert re.search(r"^\\bibliographystyle\{\w+\}", tex, re.MULTILINE), "main.tex names no bibliography style"
    keys = bib_keys(bib)
    assert len(keys) == len(set(keys)), f"duplicate keys: {sorted(k for k in set(keys) if keys.count(k) > 1)}"
    cited = cited_keys(tex)
    assert cited, "main.tex cites nothing"
    assert not cited - set(keys), f"cited in main.tex, missing from references.bib: {sorted(cited - set(keys))}"
    assert not set(keys) - cited, f"in references.bib, never cited in main.tex: {sorted(set(keys) - cited)}"


def test_bib_is_ascii_with_latex_escapes() -> None:
    """BibTeX counts bytes, not characters: accents go in as {\\v{c}}, {\\'e}, ... so the sorting and
    the labels come out right."""
    bib = (PAPER / "references.bib").read_text(encoding="utf-8")
    odd = sorted({ch for ch in bib if ord(ch) > 127})
    assert not odd, f"non-ASCII characters in references.bib: {odd}"


def test_make_rebuilds_the_pdf_when_the_bibliography_changes() -> None:
    makefile = (REPO / "Makefile").read_text().replace("\\\n", " ")
    rule = re.search(r"^paper/main\.pdf:(.*)$", makefile, re.MULTILINE)
    assert rule, "no paper/main.pdf rule in the Makefile"
    assert "paper/references.bib" in rule.group(1).split("|")[0].split()
