"""One pass over a field's text for all the literals a rule set looks for (Aho-Corasick).

Every `contains` string, every word of `words`/`words_file`, and a literal that each regex cannot
match without, go into one automaton per field. decide() scans a field's lower-cased text once, and
each condition then asks the scan instead of searching the text again; a regex runs only when its
required literal was seen. That is what keeps 1,000 rules under a millisecond.
"""

from __future__ import annotations

import re._constants as sre_c
import re._parser as sre_parse
from collections.abc import Iterable
from dataclasses import dataclass, field

import ahocorasick


def fold(text: str) -> str:
    """The case folding used for the scan: lower-case, so that matching ignores case."""
    return text.lower()


@dataclass
class Scan:
    """Where each literal was found in one text: key -> list of (start, end) spans (folded text)."""

    text: str
    found: dict[str, list[tuple[int, int]]] = field(default_factory=dict)

    def has(self, literal: str) -> bool:
        return literal in self.found

    def whole_word(self, word: str) -> bool:
        """The word occurs with no word character on either side."""
        text = self.text
        for start, end in self.found.get(word, ()):
            before = text[start - 1] if start else " "
            after = text[end] if end < len(text) else " "
            if not (before.isalnum() or before == "_") and not (after.isalnum() or after == "_"):
                return True
        return False


class Scanner:
    """The automaton for one field, built once per rule set."""

    def __init__(self, literals: Iterable[str]):
        self.literals = sorted({lit for lit in literals if lit})
        self.automaton = ahocorasick.Automaton()
        for lit in self.literals:
            self.automaton.add_word(lit, lit)
        if self.literals:
            self.automaton.make_automaton()

    def scan(self, text: str) -> Scan:
        folded = fold(text)
        result = Scan(folded)
        if not self.literals:
            return result
        found = result.found
        for end, lit in self.automaton.iter(folded):
            found.setdefault(lit, []).append((end - len(lit) + 1, end + 1))
        return result


# --- the literal a regex needs -------------------------------------------------------------

_ZERO_WIDTH = {sre_c.AT}
_MIN_USEFUL = 3


def required_literals(pattern: str) -> frozenset[str] | None:
    """Literals of which at least one must occur (lower-cased) for `pattern` to match anywhere,
    or None when no such set is known (then the regex always runs). Only ASCII literals of three
    characters or more are used, so that case folding is exact."""
    try:
        parsed = sre_parse.parse(pattern)
    except Exception:  # syntax only the `regex` module knows: no prefilter, run it
        return None
    if parsed.state.flags & sre_c.SRE_FLAG_VERBOSE:
        return None
    return _sequence(list(parsed))


def _sequence(items: list) -> frozenset[str] | None:
    best: frozenset[str] | None = None
    run: list[str] = []

    def close_run() -> None:
        nonlocal best
        if run:
            candidate = frozenset({"".join(run).lower()})
            best = _better(best, candidate)
            run.clear()

    for op, arg in items:
        if op is sre_c.LITERAL and 32 <= arg < 127:
            run.append(chr(arg))
            continue
        if op in _ZERO_WIDTH:
            continue
        close_run()
        if op is sre_c.SUBPATTERN:
            best = _better(best, _sequence(list(arg[-1])))
        elif op is sre_c.BRANCH:
            options = [_sequence(list(branch)) for branch in arg[1]]
            if all(o is not None for o in options):
                best = _better(best, frozenset().union(*options))  # type: ignore[arg-type]
        elif op in (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT, sre_c.POSSESSIVE_REPEAT):
            low, _high, inner = arg
            if low >= 1:
                best = _better(best, _sequence(list(inner)))
    close_run()
    return best


def _better(a: frozenset[str] | None, b: frozenset[str] | None) -> frozenset[str] | None:
    """Of two requirements, the more selective: the one whose shortest literal is longer."""
    usable = [x for x in (a, b) if x and min(len(s) for s in x) >= _MIN_USEFUL]
    if not usable:
        return None
    return max(usable, key=lambda x: (min(len(s) for s in x), -len(x)))
