"""Event formats other than section 1 (contract section 5): mapping files, their loader
and the matcher; the shipped presets are `presets/*.yaml` (package data).

A format is `native` (section 1, no mapping), `segment` (the preset of that name), or
the path of a mapping file: nothing else is a name, so a file named like a preset is
never shadowed. The other shipped presets are selected by their path, which
`python -m stream check-format --presets` prints.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Final

from .mapper import Mapper, Outcome
from .spec import FormatError, Rule, Spec, load_file, parse

__all__ = ["NATIVE", "FormatError", "Mapper", "Outcome", "Rule", "Spec", "load", "load_file",
           "parse", "parse_topic_formats", "preset_path", "presets"]

NATIVE: Final = "native"
#: Format names that are not paths: the contract names exactly these two.
NAMED_PRESETS: Final = ("segment",)
PRESETS_DIR: Final = Path(__file__).parent / "presets"
#: Presets whose common messages stream/_fastfold.c folds itself (the shape number it
#: knows them by): the shipped file, not a copy, whose rules the compiled code repeats.
COMPILED_SHAPES: Final = {"segment": 1}


def preset_path(name: str) -> Path:
    """The shipped mapping file of preset `name` (e.g. `segment`, `posthog`)."""
    return PRESETS_DIR / f"{name}.yaml"


def presets() -> dict[str, Path]:
    """Every shipped preset: name -> its mapping file."""
    return {p.stem: p for p in sorted(PRESETS_DIR.glob("*.yaml"))}


@functools.lru_cache(maxsize=64)
def load(name: str) -> Mapper | None:
    """The mapper of format `name`, None for `native`. Raises FormatError (one line
    naming the file and the problem). Loaded once per name and process."""
    if name == NATIVE:
        return None
    if not name:
        raise FormatError("''", ["an empty format: use native, segment or the path of a "
                                 "mapping file"])
    if name in NAMED_PRESETS:
        spec = load_file(preset_path(name))
        return Mapper(spec, name, compiled_shape=COMPILED_SHAPES.get(name, 0))
    return Mapper(load_file(name), name)


def parse_topic_formats(value: str) -> dict[str, str]:
    """`topic=format,topic=format` -> {topic: format}. Raises ValueError."""
    out: dict[str, str] = {}
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        topic, sep, fmt = part.partition("=")
        topic, fmt = topic.strip(), fmt.strip()
        if not sep or not topic or not fmt:
            raise ValueError(f"{part!r} is not topic=format")
        if topic in out:
            raise ValueError(f"topic {topic!r} is given twice")
        out[topic] = fmt
    return out

