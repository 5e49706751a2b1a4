"""Names the N42.42-2012 schema accepts in its ``NonBlankStringSimpleType`` elements.

Why: the NIST schema (n42.xsd 0.0.54) types the instrument model, manufacturer, identifier,
version strings, creator and nuclide names as ``NonBlankStringSimpleType``, whose pattern
``[\\w\\d ]*[\\w\\d\\S]+[\\w\\d ]*`` was meant as "not blank" but, read as XSD regular expressions
are (anchored; ``\\w`` excludes punctuation), also demands that every punctuation character sit
in *one* word without spaces. "CsI(Tl) 1 cm3 pocket (RadiaCode-102 class)" has punctuation in
three words and is rejected, "RadiaCode-102" or "Cs-137" pass. Validating readers (and
reach-back analysts' tools) refuse such files, so the writer puts a schema-safe form of the
name in those elements (the spaces between the first and last punctuated word become "_")
and the exact text where the schema allows free text (``RadInstrumentDescription`` for the
model; ``RadDetectorName`` is ``xsd:string`` already).
"""

from __future__ import annotations

import re
import unicodedata

_XML_SPACE = re.compile(r"[ \t\r\n]+")


def _is_word(ch: str) -> bool:
    """XSD ``\\w``: every character except punctuation (P*), separators (Z*) and others (C*)."""
    return unicodedata.category(ch)[0] not in "PZC"


def schema_safe_name(text: str | None, default: str = "unknown") -> str:
    """``text`` unchanged when the schema's NonBlankString pattern accepts it, else its safe form."""
    cleaned = "".join(ch for ch in (text or "") if unicodedata.category(ch) != "Cc" or ch in " \t\r\n")
    cleaned = _XML_SPACE.sub(" ", cleaned).strip()
    if not cleaned:
        return default
    odd = [i for i, ch in enumerate(cleaned) if ch != " " and not _is_word(ch)]
    if not odd:
        return cleaned
    first = cleaned.rfind(" ", 0, odd[0]) + 1  # start of the first punctuated word
    last = cleaned.find(" ", odd[-1])  # end of the last punctuated word
    last = len(cleaned) if last < 0 else last
    return cleaned[:first] + cleaned[first:last].replace(" ", "_") + cleaned[last:]


def is_schema_safe(text: str) -> bool:
    return schema_safe_name(text, default="") == text and text != ""
