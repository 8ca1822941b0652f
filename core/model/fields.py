"""Type checks for the config dataclasses' plain-type fields, the same whether the values come from command-line
flags, the Train page or a config.json / checkpoint file: an int field takes an int (not a bool, not a float such as
1e308 or NaN), a float field an int or a finite-or-not float (ranges are each config's own check), a str field a
str, a bool field a bool, a tuple field a list or tuple of its item type.
"""
from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["check_field_types"]

_SCALARS = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}


def _fits(value: Any, type_name: str) -> bool:
    if type_name.startswith("tuple["):
        item = type_name[len("tuple["):].split(",")[0].strip()
        return isinstance(value, (list, tuple)) and all(_fits(v, item) for v in value)
    allowed = _SCALARS[type_name]
    return isinstance(value, allowed) and (bool in allowed or not isinstance(value, bool))


def check_field_types(config: Any) -> None:
    """ValueError (one line, naming the field) when a field of the dataclass `config` holds a value of another type."""
    for field in dataclasses.fields(config):
        type_name = field.type if isinstance(field.type, str) else field.type.__name__
        value = getattr(config, field.name)
        if not _fits(value, type_name):
            raise ValueError(f"{type(config).__name__}.{field.name} must be {_described(type_name)}, got {value!r}")


def _described(type_name: str) -> str:
    if type_name.startswith("tuple["):
        return f"a list of {_described(type_name[len('tuple['):].split(',')[0].strip())}s"
    return {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false"}[type_name]
