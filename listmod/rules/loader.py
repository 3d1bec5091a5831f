"""Reading rules/*.toml: validation with file:line errors, and compiling each match into a condition."""

from __future__ import annotations

import fnmatch
import hashlib
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import regex

from ..tomlfile import ConfigError, Locator, did_you_mean, load, parse_size
from .fields import CHEAP, FIELDS, GROUPS, Field, header_field, text_values
from .model import (
    ACTIONS,
    ALL_LISTS,
    EXEMPTIONS,
    TERMINAL_ACTIONS,
    BudgetExhausted,
    Condition,
    Facts,
    Rule,
    RuleSet,
    RuleTimeout,
)
from .scan import Scanner, fold, required_literals

RULE_KEYS = ("id", "action", "reason", "match", "exempt", "category")
FILE_KEYS = ("lists", "rule")
TEXT_TESTS = ("contains", "words", "words_file", "regex", "equals", "starts_with", "ends_with", "glob",
              "case_sensitive")
NUMBER_TESTS = ("lt", "le", "gt", "ge", "eq")
REGEX_TIME_LIMIT = 0.05  # seconds a single regex may run on one message


@dataclass
class Cond:
    fn: Condition
    cost: int


@dataclass
class _Build:
    """What one load collects across files: literals per field for the scanners, fields used."""

    rules_dir: Path
    literals: dict[str, set[str]] = field(default_factory=dict)
    needs: set[str] = field(default_factory=set)
    digest: Any = field(default_factory=hashlib.sha256)

    def literal(self, field_name: str, text: str) -> None:
        self.literals.setdefault(field_name, set()).add(text)


class _Problems:
    def __init__(self, locator: Locator, index: int):
        self.locator = locator
        self.index = index
        self.found: list[str] = []

    def add(self, key: tuple[str, ...], text: str) -> None:
        self.found.append(f"{self.locator.where('rule', self.index, key)}: {text}")


def load_rules(rules_dir: Path) -> RuleSet:
    """Load every rules/*.toml in name order; raises ConfigError listing every problem found."""
    if not rules_dir.is_dir():
        raise ConfigError([f"{rules_dir}: the rules directory does not exist; create it "
                           "(it may be empty) or point [server] rules_dir at yours"])
    problems: list[str] = []
    rules: list[Rule] = []
    seen_ids: dict[str, str] = {}
    build = _Build(rules_dir)
    files = sorted(rules_dir.glob("*.toml"))
    unsafe = [u for u in (unsafe_path(rules_dir, rules_dir), *(unsafe_path(f, rules_dir) for f in files)) if u]
    if unsafe:
        raise ConfigError(unsafe)
    for path in files:
        build.digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
        try:
            data, locator = load(path, shown_as=Path(rules_dir.name) / path.name)
        except ConfigError as err:
            problems.extend(err.problems)
            continue
        rules.extend(_read_file(data, locator, seen_ids, problems, build))
    problems.extend(_unreachable(rules))
    if problems:
        raise ConfigError(problems)
    scanners = {name: Scanner(lits) for name, lits in build.literals.items()}
    return RuleSet(rules=tuple(rules), files=tuple(str(p) for p in files),
                   digest=build.digest.hexdigest(), scanners=scanners, needs=frozenset(build.needs))


def unsafe_path(path: Path, rules_dir: Path) -> str | None:
    """Why a rules file or directory must not be trusted: another user could change the rules
    (writable by others), or it is a link that leads out of rules_dir. None when it is fine."""
    root = rules_dir.resolve()
    real = path.resolve()
    if real != root and root not in real.parents:
        return (f"{path}: a link to {real}, outside {rules_dir}; rules are read only from inside "
                "rules_dir: copy the file there instead of linking it")
    try:
        mode = real.stat().st_mode
    except OSError as err:
        return f"{path}: cannot be read ({err.strerror})"
    if mode & 0o002:
        return (f"{path}: writable by every user (mode {mode & 0o777:o}), so anyone on this machine "
                f"could change the rules: chmod o-w {path}")
    return None


def _unreachable(rules: list[Rule]) -> list[str]:
    """A rule after one that decides every post (for the same lists) can never match."""
    problems = []
    blockers: list[Rule] = []
    for rule in rules:
        for blocker in blockers:
            if "*" in blocker.lists or ("*" not in rule.lists and set(rule.lists) <= set(blocker.lists)):
                problems.append(f"{rule.source}: rule '{rule.id}' can never match: rule '{blocker.id}' "
                                f"at {blocker.source} has no conditions and decides every post before "
                                "it; add conditions to that rule or move this one above it")
                break
        if rule.always and rule.action in TERMINAL_ACTIONS and not rule.exempt:
            blockers.append(rule)
    return problems


def _read_file(data: dict[str, Any], locator: Locator, seen_ids: dict[str, str],
               problems: list[str], build: _Build) -> list[Rule]:
    for key in data:
        if key not in FILE_KEYS:
            problems.append(f"{locator.where('', 0, (key,))}: '{key}' is not a rule-file key"
                            f"{did_you_mean(key, FILE_KEYS)}; a rule file holds lists = [...] "
                            "and [[rule]] tables")
    lists: tuple[str, ...] = ALL_LISTS
    if "lists" in data:
        value = data["lists"]
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            problems.append(f"{locator.where('', 0, ('lists',))}: lists must be a list of list "
                            'addresses, e.g. lists = ["dev@example.org"], or ["*"] for all')
        else:
            lists = tuple(v.strip().lower() for v in value)
            if lists == ALL_LISTS:
                lists = ALL_LISTS
    raw_rules = data.get("rule", [])
    if not isinstance(raw_rules, list):
        problems.append(f"{locator.where('', 0, ('rule',))}: rules are written as [[rule]] tables")
        return []
    compiled = []
    for index, raw in enumerate(raw_rules):
        p = _Problems(locator, index)
        rule = _read_rule(raw, p, lists, build)
        if rule is not None:
            if rule.id in seen_ids:
                p.add(("id",), f"rule id '{rule.id}' is already used at {seen_ids[rule.id]}; "
                      "each rule needs its own id")
            else:
                seen_ids[rule.id] = rule.source
        problems.extend(p.found)
        if rule is not None and not p.found:
            compiled.append(rule)
    return compiled


def _read_rule(raw: dict[str, Any], p: _Problems, lists: tuple[str, ...], build: _Build) -> Rule | None:
    for key in raw:
        if key not in RULE_KEYS:
            p.add((key,), f"'{key}' is not a rule key{did_you_mean(key, RULE_KEYS)}; "
                  f"expected: {', '.join(RULE_KEYS)}")
    rule_id = raw.get("id")
    if not isinstance(rule_id, str) or not rule_id.strip():
        p.add(("id",) if "id" in raw else (), 'the rule has no id; add id = "a-short-name" '
              "(it names the rule in the audit trail and in explanations)")
        rule_id = ""
    action = raw.get("action")
    if action not in ACTIONS:
        shown = f"'{action}' is not an action{did_you_mean(str(action), ACTIONS)}; " \
            if "action" in raw else "the rule has no action; "
        p.add(("action",) if "action" in raw else (), shown + f"expected one of: {', '.join(ACTIONS)}")
    reason = raw.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        p.add(("reason",) if "reason" in raw else (),
              "the rule has no reason; add reason = \"...\" in words the poster will understand "
              "(it is what the poster, the moderators and the audit trail see)")
    exempt = raw.get("exempt", [])
    if not isinstance(exempt, list) or not all(e in EXEMPTIONS for e in exempt):
        bad = [e for e in exempt if e not in EXEMPTIONS] if isinstance(exempt, list) else [exempt]
        p.add(("exempt",), f"exempt takes a list of: {', '.join(EXEMPTIONS)}; "
              f"{', '.join(repr(b) for b in bad)} is not one{did_you_mean(str(bad[0]), EXEMPTIONS) if bad else ''}")
        exempt = []
    category = raw.get("category", "")
    if not isinstance(category, str) or (category and not re.fullmatch(r"[a-z][a-z0-9_-]{0,39}", category)):
        p.add(("category",), 'category is one lower-case word such as "conduct" (a rejection under a '
              "conduct rule demotes the sender's trust level)")
        category = ""
    match = raw.get("match", {})
    if not isinstance(match, dict):
        p.add(("match",), "match must be a table of conditions, e.g. match.subject.contains = \"x\"")
        match = {}
    condition = _compile_match(match, ("match",), p, build)
    if p.found:
        return None
    return Rule(id=rule_id, action=str(action), reason=str(reason).strip(),
                source=p.locator.where("rule", p.index), condition=condition.fn, lists=lists,
                exempt=tuple(exempt), always=not match, category=category)


def _compile_match(table: dict[str, Any], at: tuple[str, ...], p: _Problems, build: _Build) -> Cond:
    """All conditions in the table must hold (cheapest first); an empty table always holds."""
    parts: list[Cond] = []
    for key, value in table.items():
        where = at + (key,)
        if key == "any":
            if not isinstance(value, list) or not value or not all(isinstance(v, dict) for v in value):
                p.add(where, "any must be a list of condition tables, e.g. "
                      'any = [{ subject.contains = "a" }, { body.contains = "b" }]')
                continue
            parts.append(_any([_compile_match(v, where, p, build) for v in value]))
        elif key == "not":
            if not isinstance(value, dict) or not value:
                p.add(where, 'not must be a condition table, e.g. not = { from.ends_with = "@example.org" }')
                continue
            parts.append(_not(_compile_match(value, where, p, build)))
        elif key == "header":
            if not isinstance(value, dict) or not value:
                p.add(where, 'header takes a header name, e.g. header."X-Mailer".contains = "bulk"')
                continue
            for name, tests in value.items():
                parts.extend(_compile_field(header_field(name), tests, where + (name,), p, build))
        elif key in FIELDS or key in GROUPS:
            parts.extend(_compile_field_or_group(key, value, where, p, build))
        else:
            choices = list(FIELDS) + ["header", "any", "not"]
            p.add(where, f"'{key}' is not a field{did_you_mean(key, choices + GROUPS)}; "
                  f"fields are: {', '.join(choices)}")
    return _all(parts)


def _compile_field_or_group(key: str, value: Any, at: tuple[str, ...], p: _Problems,
                            build: _Build) -> list[Cond]:
    """'sender' is both a text field and the group of sender.member, sender.trust, ..."""
    subs = [f for f in FIELDS if f.startswith(key + ".")]
    if not isinstance(value, dict):
        if key in FIELDS:
            return _compile_field(FIELDS[key], value, at, p, build)
        p.add(at, f"'{key}' is a group of fields; write e.g. match.{subs[0]} = ...; "
              f"its fields are: {', '.join(subs)}")
        return []
    tests: dict[str, Any] = {}
    parts: list[Cond] = []
    for sub, subvalue in value.items():
        name = f"{key}.{sub}"
        if name in FIELDS:
            parts.extend(_compile_field(FIELDS[name], subvalue, at + (sub,), p, build))
        elif key in FIELDS and sub not in TEXT_TESTS and did_you_mean(name, subs):
            p.add(at + (sub,), f"'{name}' is not a field{did_you_mean(name, subs)}; the fields of "
                  f"{key} are: {', '.join(subs)}, and {key} itself takes the text tests")
        else:
            tests[sub] = subvalue
    if tests:
        if key in FIELDS:
            parts.extend(_compile_field(FIELDS[key], tests, at, p, build))
        else:
            for sub in tests:
                p.add(at + (sub,), f"'{key}.{sub}' is not a field{did_you_mean(key + '.' + sub, subs)}; "
                      f"expected one of: {', '.join(subs)}")
    return parts


def _compile_field(field: Field, tests: Any, at: tuple[str, ...], p: _Problems, build: _Build) -> list[Cond]:
    build.needs.add(field.name)
    if field.kind == "bool":
        if isinstance(tests, dict) and set(tests) == {"equals"}:
            tests = tests["equals"]
        if not isinstance(tests, bool):
            p.add(at, f"{field.name} is true or false; write match.{field.name} = true (or false)")
            return []
        return [Cond(_bool_condition(field, tests), CHEAP)]
    if field.kind in ("text", "texts") and (isinstance(tests, str) or (
            isinstance(tests, list) and tests and all(isinstance(t, str) for t in tests))):
        tests = {"equals": tests}  # match.sender.trust = "trusted" means equals
    if not isinstance(tests, dict) or not tests:
        example = 'contains = "text"' if field.kind in ("text", "texts") else "gt = 10"
        p.add(at, f"{field.name} needs a test, e.g. match.{field.name}.{example}")
        return []
    is_text = field.kind in ("text", "texts")
    allowed = TEXT_TESTS if is_text else NUMBER_TESTS
    case_sensitive = tests.get("case_sensitive", False)
    if not isinstance(case_sensitive, bool):
        p.add(at + ("case_sensitive",), "case_sensitive is true or false")
        case_sensitive = False
    conditions = []
    for test, operand in tests.items():
        if test == "case_sensitive":
            if not is_text:
                p.add(at + (test,), f"case_sensitive applies to text fields, not to {field.name}")
            continue
        if test not in allowed:
            hint = "text tests" if is_text else "number tests"
            p.add(at + (test,), f"'{test}' is not a test for {field.name}{did_you_mean(test, allowed)}; "
                  f"{hint} are: {', '.join(allowed)}")
            continue
        made = (_text_test(field, test, operand, case_sensitive, at + (test,), p, build) if is_text
                else _number_test(field, test, operand, at + (test,), p))
        if made is not None:
            conditions.append(Cond(made, field.cost))
    return conditions


def _strings(operand: Any) -> tuple[str, ...] | None:
    if isinstance(operand, str):
        return (operand,)
    if isinstance(operand, list) and operand and all(isinstance(v, str) for v in operand):
        return tuple(operand)
    return None


def _words_file(name: Any, at: tuple[str, ...], p: _Problems, build: _Build) -> tuple[str, ...] | None:
    if not isinstance(name, str) or not name.strip():
        p.add(at, 'words_file takes a file name beside the rules, e.g. words_file = "slurs.txt"')
        return None
    root = build.rules_dir.resolve()
    path = (root / name).resolve()
    if root not in path.parents:
        p.add(at, f"words_file {name!r} is outside the rules directory; put the word list in "
              f"{build.rules_dir} and name it without a path")
        return None
    unsafe = unsafe_path(root / name, build.rules_dir) if path.exists() else None
    if unsafe:
        p.add(at, unsafe)
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        p.add(at, f"words_file {name!r} does not exist in {build.rules_dir}; create it with one word "
              "or phrase per line")
        return None
    except (OSError, UnicodeDecodeError) as err:
        p.add(at, f"words_file {name!r} cannot be read ({err}); save it as UTF-8 text")
        return None
    build.digest.update(b"words_file\0" + name.encode() + b"\0" + text.encode() + b"\0")
    words = tuple(line.strip() for line in text.splitlines()
                  if line.strip() and not line.lstrip().startswith("#"))
    if not words:
        p.add(at, f"words_file {name!r} has no words; one word or phrase per line, # for comments")
        return None
    return words


def _text_test(field: Field, test: str, operand: Any, case_sensitive: bool, at: tuple[str, ...],
               p: _Problems, build: _Build) -> Condition | None:
    shown_test = test
    if test == "words_file":
        found = _words_file(operand, at, p, build)
        if found is None:
            return None
        wanted, test = found, "words"
    else:
        wanted = _strings(operand)  # type: ignore[assignment]
        if wanted is None:
            if test == "equals" and operand == []:
                wanted = ()
            else:
                p.add(at, f"{field.name}.{test} takes a string or a list of strings")
                return None
    name = field.name
    if test == "regex":
        patterns = []
        flags = 0 if case_sensitive else regex.IGNORECASE
        for source in wanted:
            try:
                compiled = regex.compile(source, flags | regex.VERSION0)
            except regex.error as err:
                p.add(at, f"the regex {source!r} does not compile: {err}; "
                      "check brackets and escape special characters with \\")
                continue
            needed = required_literals(source)
            for lit in needed or ():
                build.literal(name, lit)
            patterns.append((source, compiled, needed))
        return _regex_condition(field, patterns) if patterns else None
    if test in ("contains", "words") and not case_sensitive:
        folded = [(w, fold(w.strip() if test == "words" else w)) for w in wanted if w.strip()]
        for _original, lit in folded:
            build.literal(name, lit)
        return _scan_condition(field, folded, whole_words=test == "words", label=shown_test)
    if test == "words":  # case-sensitive whole words
        pattern = regex.compile(r"(?<!\w)(?:" + "|".join(regex.escape(w.strip()) for w in wanted)
                                + r")(?!\w)")
        return _regex_condition(field, [(f"words {', '.join(wanted)}", pattern, None)], label="word")
    same = (lambda s: s) if case_sensitive else fold
    folded_wanted = tuple(same(w) for w in wanted)
    compare = {
        "contains": lambda text, w: w in text,
        "equals": lambda text, w: text == w,
        "starts_with": lambda text, w: text.startswith(w),
        "ends_with": lambda text, w: text.endswith(w),
        "glob": lambda text, w: fnmatch.fnmatchcase(text, w),
    }[test]
    words_for_test = test.replace("_", " ")

    def condition(facts: Facts) -> str | None:
        for value in text_values(field, facts):
            text = same(value)
            for original, w in zip(wanted, folded_wanted, strict=True):
                if compare(text, w):
                    return f"{field.name} {words_for_test} {original!r}"
        return None
    return condition


def _scan_condition(field: Field, folded: list[tuple[str, str]], whole_words: bool, label: str) -> Condition:
    name = field.name
    literals = frozenset(lit for _original, lit in folded)

    def condition(facts: Facts) -> str | None:
        scan = facts.scan(name, lambda: "\n".join(text_values(field, facts)))
        if scan.found.keys().isdisjoint(literals):
            return None
        for original, lit in folded:
            if (scan.whole_word(lit) if whole_words else scan.has(lit)):
                return (f"{name} has the word {original.strip()!r}" if whole_words
                        else f"{name} contains {original!r}")
        return None
    return condition


def _regex_condition(field: Field, patterns: list, label: str = "regex") -> Condition:
    name = field.name

    def condition(facts: Facts) -> str | None:
        for source, pattern, needed in patterns:
            if needed is not None:
                scan = facts.scan(name, lambda: "\n".join(text_values(field, facts)))
                if scan.found.keys().isdisjoint(needed):
                    continue  # the literal this regex cannot match without is absent
            for value in text_values(field, facts):
                limit = REGEX_TIME_LIMIT
                budget_bound = False
                if facts.deadline is not None:
                    left = facts.deadline - time.monotonic()
                    if left <= 0:
                        raise BudgetExhausted(f"the message's time budget ran out in the {label} on {name}")
                    budget_bound = left < limit
                    limit = min(limit, left)
                try:
                    # in a judge thread the GIL is released so that the event loop goes on; on the loop it
                    # is kept: every release lets another thread in, and the loop waits to get it back
                    found = pattern.search(value, timeout=limit, concurrent=facts.release_gil)
                except TimeoutError:
                    if budget_bound:
                        raise BudgetExhausted(f"the message's time budget ran out in the {label} on {name}") from None
                    raise RuleTimeout(f"{label} on {name} ran past {limit:.3g}s") from None
                if found:
                    shown = found.group(0)[:80]
                    return (f"{name} has the {label} {shown!r}" if label == "word"
                            else f"{name} matches {source!r} at {shown!r}")
        return None
    return condition


def _number_test(field: Field, test: str, operand: Any, at: tuple[str, ...], p: _Problems) -> Condition | None:
    try:
        if field.kind == "size":
            limit: float = parse_size(operand)
        elif field.kind == "score" and isinstance(operand, (int, float)) and not isinstance(operand, bool):
            limit = float(operand)
        elif isinstance(operand, bool) or not isinstance(operand, int):
            raise ValueError(f"{field.name}.{test} takes a whole number")
        else:
            limit = operand
    except ValueError as err:
        p.add(at, str(err))
        return None
    symbol, compare = {
        "lt": ("<", lambda v: v < limit), "le": ("<=", lambda v: v <= limit),
        "gt": (">", lambda v: v > limit), "ge": (">=", lambda v: v >= limit),
        "eq": ("=", lambda v: v == limit),
    }[test]
    show = _show_size if field.kind == "size" else str

    def condition(facts: Facts) -> str | None:
        value = field.read(facts)
        if not isinstance(value, (int, float)):
            return None
        return f"{field.name} {show(value)} {symbol} {show(limit)}" if compare(value) else None
    return condition


def _show_size(n: float) -> str:
    for unit, size in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} bytes"


def _bool_condition(field: Field, wanted: bool) -> Condition:
    def condition(facts: Facts) -> str | None:
        return f"{field.name} is {str(wanted).lower()}" if field.read(facts) is wanted else None
    return condition


def _all(parts: list[Cond]) -> Cond:
    if not parts:
        return Cond(lambda facts: "always", CHEAP)
    if len(parts) == 1:
        return parts[0]
    ordered = [c.fn for c in sorted(parts, key=lambda c: c.cost)]  # cheap fields first

    def condition(facts: Facts) -> str | None:
        evidence = []
        for part in ordered:
            found = part(facts)
            if found is None:
                return None
            evidence.append(found)
        return "; ".join(evidence)
    return Cond(condition, max(c.cost for c in parts))


def _any(options: list[Cond]) -> Cond:
    fns = [c.fn for c in options]

    def condition(facts: Facts) -> str | None:
        for option in fns:
            found = option(facts)
            if found is not None:
                return found
        return None
    return Cond(condition, max((c.cost for c in options), default=CHEAP))


def _not(inner: Cond) -> Cond:
    fn = inner.fn

    def condition(facts: Facts) -> str | None:
        return "the 'not' condition does not hold" if fn(facts) is None else None
    return Cond(condition, inner.cost)

