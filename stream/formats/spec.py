"""Mapping files (contract section 5): YAML text -> a checked `Spec`, or every problem.

Pure: no I/O but reading the file. Every problem is one line that names where it is
(`rule 2: ...`), so `check-format` can list them all and the worker can stop at start
with the first one.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from ..events import EVENT_TYPES, SURVEY_RANGES

#: Section-1 fields a mapping can fill (`type` comes from the rules, never from a path).
FIELDS: Final = ("event_id", "user_id", "ts", "campaign", "survey", "score")
#: What every event needs, and what each type needs on top (section 1).
COMMON_FIELDS: Final = ("event_id", "user_id", "ts")
TYPE_FIELDS: Final = {
    "activity": (), "signup": (), "cancellation": (),
    "visit": ("campaign",), "conversion": ("campaign",), "survey": ("survey", "score"),
}
#: Fields a rule may set to a constant with `set` (an extension of section 5: a rule for
#: a product's own "NPS answered" event can say `survey: nps`).
CONSTANT_FIELDS: Final = ("campaign", "survey", "score")
OTHERWISE: Final = ("ignore", "dead_letter")
_TOP_KEYS: Final = ("fields", "props", "rules", "otherwise", "description")
_RULE_KEYS: Final = ("match", "type", "fields", "set", "name")

#: A test of one path: ("eq", accepted JSON values) or ("present", wanted).
Test = tuple[str, Any]


class FormatError(Exception):
    """A mapping file that cannot be used. `problems` are one line each; the message is
    one line naming the file and the first problem."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        more = len(problems) - 1
        tail = (f" (and {more} more: check it with `python -m stream check-format "
                f"{source}`)" if more > 0 else "")
        super().__init__(f"mapping file {source}: {problems[0]}{tail}")


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule: `number` counts from 1 in the file's order; `match` is (path, test)
    pairs, all of which must hold; `fields` the rule's own paths per field (they replace
    the top-level ones); `constants` the fields it sets to a fixed value."""

    number: int
    type: str
    match: tuple[tuple[str, Test], ...] = ()
    fields: dict[str, tuple[str, ...]] = field(default_factory=dict)
    constants: dict[str, Any] = field(default_factory=dict)
    name: str = ""

    @property
    def label(self) -> str:
        """How the rule is named to humans: `rule 3 (Order Completed)`."""
        return f"rule {self.number}" + (f" ({self.name})" if self.name else "")


@dataclass(frozen=True, slots=True)
class Spec:
    """A checked mapping: `fields` section-1 field -> paths (the first present wins),
    `props` prop name -> paths, `rules` in order, `otherwise` `ignore` or `dead_letter`."""

    source: str
    fields: dict[str, tuple[str, ...]]
    props: dict[str, tuple[str, ...]]
    rules: tuple[Rule, ...]
    otherwise: str = "ignore"
    description: str = ""

    def paths_of(self, rule: Rule, name: str) -> tuple[str, ...]:
        """The paths `rule` takes field `name` from: its own, which replace the top-level
        ones (no fallback to them), else the top-level ones."""
        own = rule.fields.get(name)
        return own if own is not None else self.fields.get(name, ())


def load_file(path: str | Path) -> Spec:
    """Read and check a mapping file. Raises FormatError."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FormatError(source, ["no such file (a format is `native`, `segment` or the "
                                   "path of a mapping file)"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FormatError(source, [f"cannot read it: {getattr(exc, 'strerror', None) or exc}"]
                          ) from None
    return parse(text, source)


def parse(text: str, source: str = "<mapping>") -> Spec:
    """Check the YAML text of a mapping file. Raises FormatError with every problem."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise FormatError(source, [_yaml_problem(exc)]) from None
    problems: list[str] = []
    spec = _spec(doc, source, problems)
    if problems or spec is None:
        raise FormatError(source, problems or ["not a mapping file"])
    return spec


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return " ".join(f"bad YAML{where}: {problem}".split())


def _spec(doc: Any, source: str, problems: list[str]) -> Spec | None:
    if not isinstance(doc, dict):
        problems.append("the file must be a YAML mapping with `fields` and `rules`")
        return None
    for key in doc:
        if key not in _TOP_KEYS:
            problems.append(f"unknown key {_name(key)} (expected {_one_of(_TOP_KEYS)})")
    fields = _field_paths(doc.get("fields"), "fields", problems, allow_missing=False)
    props = _prop_paths(doc.get("props"), problems)
    otherwise = doc.get("otherwise", "ignore")
    if otherwise not in OTHERWISE:
        problems.append(f"`otherwise` is {_value(otherwise)}: use `ignore` or `dead_letter`")
        otherwise = "ignore"
    description = doc.get("description", "")
    if not isinstance(description, str):
        problems.append("`description` must be text")
        description = ""
    raw_rules = doc.get("rules")
    rules: list[Rule] = []
    if not isinstance(raw_rules, list) or not raw_rules:
        problems.append("`rules` must be a non-empty list of rules")
    else:
        for number, raw in enumerate(raw_rules, 1):
            rule = _rule(raw, number, problems)
            if rule is not None:
                rules.append(rule)
    spec = Spec(source, fields, props, tuple(rules), otherwise, description)
    for rule in rules:
        have = {name for name in FIELDS if spec.paths_of(rule, name)} | set(rule.constants)
        missing = [f for f in COMMON_FIELDS + TYPE_FIELDS[rule.type] if f not in have]
        if missing:
            where = ("the top-level `fields` or the rule's `fields`"
                     if any(f in COMMON_FIELDS for f in missing)
                     else "the rule's `fields` (or `set`, or the top-level `fields`)")
            problems.append(f"{rule.label}: a {rule.type} event needs "
                            f"{', '.join(f'`{f}`' for f in missing)}: add it to {where}")
    return spec


def _rule(raw: Any, number: int, problems: list[str]) -> Rule | None:
    where = f"rule {number}"
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be a mapping with `type` (and `match`, `fields`)")
        return None
    name = raw.get("name", "")
    if not isinstance(name, str):
        problems.append(f"{where}: `name` must be text")
        name = ""
    if name:
        where = f"rule {number} ({name})"
    for key in raw:
        if key not in _RULE_KEYS:
            problems.append(f"{where}: unknown key {_name(key)} (expected {_one_of(_RULE_KEYS)})")
    type_ = raw.get("type")
    if type_ not in EVENT_TYPES:
        problems.append(f"{where}: `type` is {_value(type_)}: use one of "
                        f"{', '.join(EVENT_TYPES)}")
        type_ = None
    match = _match(raw.get("match"), where, problems)
    fields = _field_paths(raw.get("fields"), f"{where}: `fields`", problems, allow_missing=True)
    constants = _constants(raw.get("set"), where, problems)
    for both in sorted(set(fields) & set(constants)):
        problems.append(f"{where}: `{both}` is both in `fields` and in `set`")
    if type_ is None:
        return None
    return Rule(number, type_, match, fields, constants, name)


def _match(raw: Any, where: str, problems: list[str]) -> tuple[tuple[str, Test], ...]:
    if raw is None:
        return ()  # a missing `match` always holds
    if not isinstance(raw, dict):
        problems.append(f"{where}: `match` must be a mapping of path -> value")
        return ()
    tests: list[tuple[str, Test]] = []
    for path, want in raw.items():
        if not _path_ok(path, f"{where}: `match`", problems):
            continue
        if isinstance(want, dict):
            if set(want) != {"present"} or not isinstance(want["present"], bool):
                problems.append(f"{where}: `match` of `{path}`: a mapping must be exactly "
                                f"{{present: true}} or {{present: false}}")
                continue
            tests.append((path, ("present", want["present"])))
            continue
        members = want if isinstance(want, list) else [want]
        if not members:
            problems.append(f"{where}: `match` of `{path}`: an empty list matches nothing")
            continue
        bad = [m for m in members if not _json_scalar(m)]
        if bad:
            problems.append(f"{where}: `match` of `{path}`: {_value(bad[0])} is not a JSON "
                            f"string, number, boolean or null (quote it)")
            continue
        tests.append((path, ("eq", tuple(members))))
    return tuple(tests)


def _json_scalar(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, str | int | bool)


def _constants(raw: Any, where: str, problems: list[str]) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.append(f"{where}: `set` must be a mapping of field -> value")
        return {}
    out: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in CONSTANT_FIELDS:
            problems.append(f"{where}: `set` can only set {_one_of(CONSTANT_FIELDS)}, "
                            f"not {_name(name)}")
        elif name == "survey" and value not in SURVEY_RANGES:
            problems.append(f"{where}: `set` of `survey` must be nps or csat")
        elif name == "score" and (type(value) is not int):
            problems.append(f"{where}: `set` of `score` must be an integer")
        elif name == "campaign" and (not isinstance(value, str) or not value):
            problems.append(f"{where}: `set` of `campaign` must be non-empty text")
        else:
            out[name] = value
    return out


def _field_paths(raw: Any, where: str, problems: list[str], allow_missing: bool) -> (
    dict[str, tuple[str, ...]]
):
    if raw is None:
        if not allow_missing:
            problems.append("`fields` is missing: name the paths of at least "
                            "event_id, user_id and ts")
        return {}
    if not isinstance(raw, dict):
        problems.append(f"{where} must be a mapping of section-1 field -> path")
        return {}
    out: dict[str, tuple[str, ...]] = {}
    for name, paths in raw.items():
        if name == "type":
            problems.append(f"{where}: `type` comes from the rules, not from a path")
        elif name == "props":
            problems.append(f"{where}: `props` goes in the top-level `props` mapping")
        elif name not in FIELDS:
            problems.append(f"{where}: unknown field {_name(name)} (expected "
                            f"{_one_of(FIELDS)})")
        else:
            got = _paths(paths, f"{where}: `{name}`", problems)
            if got:
                out[name] = got
    return out


def _prop_paths(raw: Any, problems: list[str]) -> dict[str, tuple[str, ...]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.append("`props` must be a mapping of prop name -> path")
        return {}
    out: dict[str, tuple[str, ...]] = {}
    for name, paths in raw.items():
        if not isinstance(name, str) or not name:
            problems.append(f"`props`: the prop name {_value(name)} must be non-empty text")
            continue
        got = _paths(paths, f"`props`: `{name}`", problems)
        if got:
            out[name] = got
    return out


def _paths(raw: Any, where: str, problems: list[str]) -> tuple[str, ...]:
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        problems.append(f"{where}: an empty list of paths")
        return ()
    if all(_path_ok(p, where, problems) for p in items):
        return tuple(items)
    return ()


def _path_ok(path: Any, where: str, problems: list[str]) -> bool:
    if not isinstance(path, str) or not path:
        problems.append(f"{where}: the path {_value(path)} must be non-empty text "
                        f"(object keys joined by dots)")
        return False
    if any(not part for part in path.split(".")):
        problems.append(f"{where}: the path `{path}` has an empty key (two dots, or a dot "
                        f"at an end)")
        return False
    return True


def _name(key: Any) -> str:
    return f"`{key}`" if isinstance(key, str) else _value(key)


def _value(value: Any) -> str:
    if isinstance(value, datetime.date):
        return f"the date {value.isoformat()}"
    if value is None:
        return "missing"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, Mapping | list):
        return f"a {type(value).__name__}"
    return repr(value)


def _one_of(names: tuple[str, ...]) -> str:
    return ", ".join(f"`{n}`" for n in names)
