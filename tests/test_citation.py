"""Checks on CITATION.cff: the keys CFF 1.2.0 requires and agreement with pyproject.toml."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
CITATION = REPOSITORY / "CITATION.cff"
REQUIRED_KEYS = ("cff-version", "message", "title", "authors")  # required by CFF 1.2.0
AUTHORS = [
    ("Sert", "E."),
    ("Azimbagirad", "M."),
    ("Onah", "D."),
    ("Alexander", "D. C."),
    ("Jacob", "J."),
    ("Aslani", "S."),
]


def load_citation() -> dict:
    yaml = pytest.importorskip("yaml", reason="PyYAML is needed to parse CITATION.cff fully")
    return yaml.safe_load(CITATION.read_text(encoding="utf-8"))


def pyproject_value(key: str) -> str:
    match = re.search(rf'^{key}\s*=\s*"([^"]*)"', (REPOSITORY / "pyproject.toml").read_text(), re.MULTILINE)
    assert match, f"pyproject.toml has no {key} line"
    return match.group(1)


def test_required_keys_present():
    # Top-level keys start a line with no indentation, so this works without a YAML parser.
    top_level_keys = re.findall(r"^([A-Za-z-]+):", CITATION.read_text(encoding="utf-8"), re.MULTILINE)

    for key in REQUIRED_KEYS:
        assert key in top_level_keys, f"CITATION.cff lacks the required key {key!r}"


def test_required_values_valid():
    citation = load_citation()

    assert citation["cff-version"] == "1.2.0"
    assert citation["message"].strip()
    assert citation["title"].startswith("hemidiaphragm:")
    assert [(a["family-names"], a["given-names"]) for a in citation["authors"]] == AUTHORS


def test_software_matches_pyproject():
    citation = load_citation()

    assert citation["type"] == "software"
    assert citation["version"] == pyproject_value("version")
    assert citation["license"] == pyproject_value("license")


def test_preferred_citation_manuscript():
    manuscript = load_citation()["preferred-citation"]

    assert manuscript["type"] in ("article", "conference-paper")
    assert manuscript["title"].startswith("Accessible Hemidiaphragm Landmark Localisation")
    assert [(a["family-names"], a["given-names"]) for a in manuscript["authors"]] == AUTHORS
    assert manuscript["year"] == 2026
    assert "ISBI" in manuscript["collection-title"]
    assert manuscript["notes"] == "Submitted"
