"""Reading rules/*.toml: validation with file:line errors, and compiling each match into a condition."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Optional

import regex

from ..tomlfile import ConfigError, Locator, did_you_mean, load, parse_size
from .fields import FIELDS, Field, header_field
from .model import ACTIONS, Condition, Facts, Rule, RuleSet, RuleTimeout

RULE_KEYS = ("id", "action", "reason", "match")
FILE_KEYS = ("lists", "rule")
TEXT_TESTS = ("contains", "words", "regex", "equals", "starts_with", "ends_with", "case_sensitive")
NUMBER_TESTS = ("lt", "le", "gt", "ge", "eq")
COMBINERS = ("any", "not")
REGEX_TIME_LIMIT = 0.05  # seconds a single regex may run on one message


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
    digest = hashlib.sha256()
    files = sorted(rules_dir.glob("*.toml"))
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
        try:
            data, locator = load(path, shown_as=Path(rules_dir.name) / path.name)
        except ConfigError as err:
            problems.extend(err.problems)
            continue
        rules.extend(_read_file(path, data, locator, seen_ids, problems))
    if problems:
        raise ConfigError(problems)
    return RuleSet(rules=tuple(rules), files=tuple(str(p) for p in files), digest=digest.hexdigest())


def _read_file(path: Path, data: dict[str, Any], locator: Locator, seen_ids: dict[str, str],
               problems: list[str]) -> list[Rule]:
    for key in data:
        if key not in FILE_KEYS:
            problems.append(f"{locator.where('', 0, (key,))}: '{key}' is not a rule-file key"
                            f"{did_you_mean(key, FILE_KEYS)}; a rule file holds lists = [...] "
                            "and [[rule]] tables")
    lists: tuple[str, ...] = ("*",)
    if "lists" in data:
        value = data["lists"]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            problems.append(f"{locator.where('', 0, ('lists',))}: lists must be a list of list "
                            'addresses, e.g. lists = ["dev@example.org"], or ["*"] for all')
        else:
            lists = tuple(v.strip().lower() for v in value)
    raw_rules = data.get("rule", [])
    if not isinstance(raw_rules, list):
        problems.append(f"{locator.where('', 0, ('rule',))}: rules are written as [[rule]] tables")
        return []
    compiled = []
    for index, raw in enumerate(raw_rules):
        p = _Problems(locator, index)
        rule = _read_rule(raw, p, lists)
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


def _read_rule(raw: dict[str, Any], p: _Problems, lists: tuple[str, ...]) -> Optional[Rule]:
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
    match = raw.get("match", {})
    if not isinstance(match, dict):
        p.add(("match",), "match must be a table of conditions, e.g. match.subject.contains = \"x\"")
        match = {}
    condition = _compile_match(match, ("match",), p)
    if p.found:
        return None
    return Rule(id=rule_id, action=str(action), reason=str(reason).strip(),
                source=p.locator.where("rule", p.index), condition=condition, lists=lists)


def _compile_match(table: dict[str, Any], at: tuple[str, ...], p: _Problems) -> Condition:
    """All conditions in the table must hold; an empty table always holds."""
    parts: list[Condition] = []
    for key, value in table.items():
        where = at + (key,)
        if key == "any":
            if not isinstance(value, list) or not value or not all(isinstance(v, dict) for v in value):
                p.add(where, "any must be a list of condition tables, e.g. "
                      'any = [{ subject.contains = "a" }, { body.contains = "b" }]')
                continue
            parts.append(_any([_compile_match(v, where, p) for v in value]))
        elif key == "not":
            if not isinstance(value, dict) or not value:
                p.add(where, 'not must be a condition table, e.g. not = { from.ends_with = "@example.org" }')
                continue
            parts.append(_not(_compile_match(value, where, p)))
        elif key == "header":
            if not isinstance(value, dict) or not value:
                p.add(where, 'header takes a header name, e.g. header."X-Mailer".contains = "bulk"')
                continue
            for name, tests in value.items():
                parts.extend(_compile_field(header_field(name), tests, where + (name,), p))
        elif key in FIELDS or any(f.startswith(key + ".") for f in FIELDS):
            parts.extend(_compile_field_or_group(key, value, where, p))
        else:
            choices = list(FIELDS) + ["header", "any", "not"]
            p.add(where, f"'{key}' is not a field{did_you_mean(key, choices)}; "
                  f"fields are: {', '.join(choices)}")
    return _all(parts)


def _compile_field_or_group(key: str, value: Any, at: tuple[str, ...], p: _Problems) -> list[Condition]:
    """'sender' is both a text field and the group of sender.member, sender.moderator, ..."""
    if not isinstance(value, dict):
        if key in FIELDS:
            return _compile_field(FIELDS[key], value, at, p)
        p.add(at, f"'{key}' is a group of fields; write e.g. match.{key}."
              f"{next(f for f in FIELDS if f.startswith(key + '.')).split('.', 1)[1]} = true")
        return []
    tests: dict[str, Any] = {}
    parts: list[Condition] = []
    for sub, subvalue in value.items():
        name = f"{key}.{sub}"
        if name in FIELDS:
            parts.extend(_compile_field(FIELDS[name], subvalue, at + (sub,), p))
        else:
            tests[sub] = subvalue
    if tests:
        if key in FIELDS:
            parts.extend(_compile_field(FIELDS[key], tests, at, p))
        else:
            subs = [f for f in FIELDS if f.startswith(key + ".")]
            for sub in tests:
                p.add(at + (sub,), f"'{key}.{sub}' is not a field{did_you_mean(key + '.' + sub, subs)}; "
                      f"expected one of: {', '.join(subs)}")
    return parts


def _compile_field(field: Field, tests: Any, at: tuple[str, ...], p: _Problems) -> list[Condition]:
    if field.kind == "bool":
        if isinstance(tests, dict) and set(tests) == {"equals"}:
            tests = tests["equals"]
        if not isinstance(tests, bool):
            p.add(at, f"{field.name} is true or false; write match.{field.name} = true (or false)")
            return []
        return [_bool_condition(field, tests)]
    if not isinstance(tests, dict) or not tests:
        example = 'contains = "text"' if field.kind in ("text", "texts") else "gt = 10"
        p.add(at, f"{field.name} needs a test, e.g. match.{field.name}.{example}")
        return []
    allowed = TEXT_TESTS if field.kind in ("text", "texts") else NUMBER_TESTS
    conditions = []
    case_sensitive = tests.get("case_sensitive", False)
    if not isinstance(case_sensitive, bool):
        p.add(at + ("case_sensitive",), "case_sensitive is true or false")
        case_sensitive = False
    for test, operand in tests.items():
        if test == "case_sensitive":
            if field.kind not in ("text", "texts"):
                p.add(at + (test,), f"case_sensitive applies to text fields, not to {field.name}")
            continue
        if test not in allowed:
            hint = "text tests" if field.kind in ("text", "texts") else "number tests"
            p.add(at + (test,), f"'{test}' is not a test for {field.name}{did_you_mean(test, allowed)}; "
                  f"{hint} are: {', '.join(allowed)}")
            continue
        made = (_text_test(field, test, operand, case_sensitive, at + (test,), p)
                if field.kind in ("text", "texts")
                else _number_test(field, test, operand, at + (test,), p))
        if made is not None:
            conditions.append(made)
    return conditions


def _strings(operand: Any) -> Optional[tuple[str, ...]]:
    if isinstance(operand, str):
        return (operand,)
    if isinstance(operand, list) and operand and all(isinstance(v, str) for v in operand):
        return tuple(operand)
    return None


def _values(field: Field, facts: Facts) -> tuple[str, ...]:
    value = field.read(facts)
    return value if isinstance(value, tuple) else (str(value),)


def _text_test(field: Field, test: str, operand: Any, case_sensitive: bool, at: tuple[str, ...],
               p: _Problems) -> Optional[Condition]:
    wanted = _strings(operand)
    if wanted is None:
        p.add(at, f"{field.name}.{test} takes a string or a list of strings")
        return None
    flags = 0 if case_sensitive else regex.IGNORECASE
    if test == "regex":
        patterns = []
        for source in wanted:
            try:
                patterns.append((source, regex.compile(source, flags | regex.VERSION0)))
            except regex.error as err:
                p.add(at, f"the regex {source!r} does not compile: {err}; "
                      "check brackets and escape special characters with \\")
        return _regex_condition(field, patterns) if patterns else None
    if test == "words":
        words = [w for w in wanted if w.strip()]
        pattern = regex.compile(r"(?<!\w)(?:" + "|".join(regex.escape(w.strip()) for w in words)
                                + r")(?!\w)", flags)
        return _regex_condition(field, [(f"words {', '.join(words)}", pattern)], label="word")
    fold = (lambda s: s) if case_sensitive else str.casefold
    folded = tuple(fold(w) for w in wanted)
    compare = {
        "contains": lambda text, w: w in text,
        "equals": lambda text, w: text == w,
        "starts_with": lambda text, w: text.startswith(w),
        "ends_with": lambda text, w: text.endswith(w),
    }[test]
    words_for_test = test.replace("_", " ")

    def condition(facts: Facts) -> Optional[str]:
        for value in _values(field, facts):
            text = fold(value)
            for original, w in zip(wanted, folded):
                if compare(text, w):
                    return f"{field.name} {words_for_test} {original!r}"
        return None
    return condition


def _regex_condition(field: Field, patterns: list, label: str = "regex") -> Condition:
    def condition(facts: Facts) -> Optional[str]:
        for value in _values(field, facts):
            for source, pattern in patterns:
                try:
                    found = pattern.search(value, timeout=REGEX_TIME_LIMIT)
                except TimeoutError:
                    raise RuleTimeout(f"{label} on {field.name} ran past {REGEX_TIME_LIMIT}s") from None
                if found:
                    shown = found.group(0)[:80]
                    return (f"{field.name} has the {label} {shown!r}" if label == "word"
                            else f"{field.name} matches {source!r} at {shown!r}")
        return None
    return condition


def _number_test(field: Field, test: str, operand: Any, at: tuple[str, ...], p: _Problems) -> Optional[Condition]:
    try:
        if field.kind == "size":
            limit = parse_size(operand)
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

    def condition(facts: Facts) -> Optional[str]:
        value = field.read(facts)
        assert isinstance(value, int)
        return f"{field.name} {show(value)} {symbol} {show(limit)}" if compare(value) else None
    return condition


def _show_size(n: int) -> str:
    for unit, size in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def _bool_condition(field: Field, wanted: bool) -> Condition:
    def condition(facts: Facts) -> Optional[str]:
        return f"{field.name} is {str(wanted).lower()}" if field.read(facts) is wanted else None
    return condition


def _all(parts: list[Condition]) -> Condition:
    if len(parts) == 1:
        return parts[0]

    def condition(facts: Facts) -> Optional[str]:
        evidence = []
        for part in parts:
            found = part(facts)
            if found is None:
                return None
            evidence.append(found)
        return "; ".join(evidence) if evidence else "always"
    return condition


def _any(options: list[Condition]) -> Condition:
    def condition(facts: Facts) -> Optional[str]:
        for option in options:
            found = option(facts)
            if found is not None:
                return found
        return None
    return condition


def _not(inner: Condition) -> Condition:
    def condition(facts: Facts) -> Optional[str]:
        return "the 'not' condition does not hold" if inner(facts) is None else None
    return condition
