"""Praat TextGrid reader (the three text serialisations found in ds003020).

- long ``ooTextFile`` (``xmin = 0``, ``item [1]:``, ``intervals [1]:`` ... ``text = "..."``),
- short ``ooTextFile`` (the same values, one per line, without labels),
- ``"Praat chronological TextGrid text file"`` (tiers declared up front, then ``tier xmin xmax`` lines
  each followed by the quoted text, in time order; ``!`` starts a comment).

Like Praat's own reader, the two ``ooTextFile`` forms are read as a stream of values: quoted strings,
numbers and ``<exists>`` flags; labels (``xmin =``, ``item [1]:``) are skipped. Strings may contain
doubled quotes (``""``) and line breaks. Files may be UTF-8 (with or without BOM), UTF-16 (with BOM) or
Latin-1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["TextGridError", "Tier", "read_textgrid", "parse_textgrid"]


class TextGridError(ValueError):
    """A TextGrid file is missing or malformed (the message names the file and what was expected)."""


@dataclass
class Tier:
    name: str
    kind: str  # "IntervalTier" or "TextTier" (points: start == stop)
    xmin: float
    xmax: float
    items: list[tuple[float, float, str]] = field(default_factory=list)  # (start, stop, text)


_TOKEN = re.compile(r'"((?:[^"]|"")*)"|(\S+)', re.S)
_FLAGS = {"<exists>": True, "<absent>": False}


def _decode(raw: bytes, source: str) -> str:
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16")
    for enc in ("utf-8-sig", "latin-1"):
        try:
            return raw.decode(enc)
        except UnicodeDecodeError:
            continue
    raise TextGridError(f"{source}: cannot decode the file as UTF-8, UTF-16 or Latin-1")


def _strip_comments(text: str) -> str:
    """Remove ``! ...`` comments (outside quoted strings), as in the chronological format."""
    out, in_str, i = [], False, 0
    while i < len(text):
        ch = text[i]
        if ch == '"':
            in_str = not in_str
        elif ch == "!" and not in_str:
            j = text.find("\n", i)
            i = len(text) if j < 0 else j
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _values(text: str) -> list:
    """Quoted strings (str), numbers (float) and flags (bool); everything else is a label and skipped."""
    vals: list = []
    for m in _TOKEN.finditer(text):
        if m.group(1) is not None:
            vals.append(m.group(1).replace('""', '"'))
            continue
        tok = m.group(2)
        if tok in _FLAGS:
            vals.append(_FLAGS[tok])
            continue
        try:
            vals.append(float(tok))
        except ValueError:
            pass
    return vals


class _Stream:
    def __init__(self, values: list, source: str):
        self.values, self.pos, self.source = values, 0, source

    def _next(self, want: type, what: str):
        if self.pos >= len(self.values):
            raise TextGridError(f"{self.source}: file ends early; expected {what}")
        v = self.values[self.pos]
        ok = isinstance(v, want) and not (want is float and isinstance(v, bool))
        if not ok:
            raise TextGridError(f"{self.source}: value {self.pos + 1} is {v!r}; expected {what}")
        self.pos += 1
        return v

    def num(self, what: str) -> float:
        return self._next(float, what)

    def count(self, what: str) -> int:
        v = self.num(what)
        if v < 0 or v != int(v):
            raise TextGridError(f"{self.source}: {what} must be a whole number >= 0, got {v!r}")
        return int(v)

    def string(self, what: str) -> str:
        return self._next(str, what)


def _parse_ootext(text: str, source: str) -> list[Tier]:
    s = _Stream(_values(text), source)
    if s.string('the file type "ooTextFile"') != "ooTextFile":
        raise TextGridError(f"{source}: not a Praat text file (expected File type = \"ooTextFile\")")
    if s.string('the object class "TextGrid"') != "TextGrid":
        raise TextGridError(f"{source}: not a TextGrid (expected Object class = \"TextGrid\")")
    s.num("the TextGrid xmin")
    s.num("the TextGrid xmax")
    if s.pos < len(s.values) and isinstance(s.values[s.pos], bool):
        if not s.values[s.pos]:
            return []
        s.pos += 1
    n_tiers = s.count("the number of tiers")
    tiers = []
    for t in range(n_tiers):
        kind = s.string(f'tier {t + 1} class ("IntervalTier" or "TextTier")')
        name = s.string(f"tier {t + 1} name")
        tier = Tier(name=name, kind=kind, xmin=s.num(f"tier {t + 1} xmin"), xmax=s.num(f"tier {t + 1} xmax"))
        n = s.count(f"tier {t + 1} ({name!r}) item count")
        for k in range(n):
            where = f"tier {name!r} item {k + 1}"
            if kind == "IntervalTier":
                a, b = s.num(f"{where} xmin"), s.num(f"{where} xmax")
                tier.items.append((a, b, s.string(f"{where} text")))
            elif kind == "TextTier":
                a = s.num(f"{where} time")
                tier.items.append((a, a, s.string(f"{where} mark")))
            else:
                raise TextGridError(f"{source}: tier {t + 1} has class {kind!r}; expected IntervalTier or TextTier")
        tiers.append(tier)
    return tiers


def _parse_chronological(text: str, source: str) -> list[Tier]:
    s = _Stream(_values(_strip_comments(text)), source)
    s.string("the chronological header")
    s.num("the TextGrid xmin")
    s.num("the TextGrid xmax")
    n_tiers = s.count("the number of tiers")
    tiers = []
    for t in range(n_tiers):
        kind = s.string(f"tier {t + 1} class")
        if kind not in ("IntervalTier", "TextTier"):
            raise TextGridError(f"{source}: tier {t + 1} has class {kind!r}; expected IntervalTier or TextTier")
        name = s.string(f"tier {t + 1} name")
        tiers.append(Tier(name=name, kind=kind, xmin=s.num(f"tier {t + 1} xmin"), xmax=s.num(f"tier {t + 1} xmax")))
    while s.pos < len(s.values):
        idx = s.count("a tier number")
        if not 1 <= idx <= n_tiers:
            raise TextGridError(f"{source}: entry refers to tier {idx}; the file declares {n_tiers} tiers")
        tier = tiers[idx - 1]
        if tier.kind == "IntervalTier":
            a, b = s.num(f"tier {idx} interval xmin"), s.num(f"tier {idx} interval xmax")
        else:
            a = b = s.num(f"tier {idx} point time")
        tier.items.append((a, b, s.string(f"tier {idx} text")))
    return tiers


def parse_textgrid(text: str, *, source: str = "TextGrid") -> list[Tier]:
    """Parse TextGrid text in any of the three serialisations; tiers in file order."""
    head = text.lstrip()[:200]
    if head.startswith('"Praat chronological TextGrid text file"'):
        tiers = _parse_chronological(text, source)
    elif "ooTextFile" in head:
        tiers = _parse_ootext(text, source)
    else:
        raise TextGridError(f"{source}: not a Praat TextGrid (expected 'File type = \"ooTextFile\"' or "
                            "'\"Praat chronological TextGrid text file\"' at the top)")
    for tier in tiers:
        for a, b, _ in tier.items:
            if not b >= a:
                raise TextGridError(f"{source}: tier {tier.name!r} has an interval ending before it starts "
                                    f"({a} > {b})")
    return tiers


def read_textgrid(path) -> list[Tier]:
    """Read a TextGrid file; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise TextGridError(f"{path}: TextGrid file not found")
    return parse_textgrid(_decode(path.read_bytes(), str(path)), source=str(path))
