"""Config schemas: one place for each section's defaults, unknown fields rejected by name.

A schema is a function returning a complete `ConfigDict` of defaults. `merge` lays a user's
(partial) section over it. Completed sections are what config files return and what the code
reads, so every field (also one a config file never mentions) can be overridden on the command
line with ml_collections' `--config.a.b=value`. Two habits keep that true:

* sequences are tuples (ml_collections cannot override a list field: "Type <class 'list'> ...
  is not supported for overriding"); `merge` turns lists into tuples;
* a field whose default is "unset" is a typed placeholder (`placeholder(float)`), not a bare
  None, which ml_collections cannot override either; a given None means "not set": the
  default stays.

Only the libraries' light dependency (ml_collections) is imported here: config files import
the schemas.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Callable, Iterator, Mapping

import ml_collections
from ml_collections import config_dict

ConfigDict = ml_collections.ConfigDict
placeholder = config_dict.placeholder


def as_tuples(value: Any) -> Any:
    """Lists (at any depth inside lists and tuples) as tuples."""
    if isinstance(value, (list, tuple)):
        return tuple(as_tuples(v) for v in value)
    return value


def fields(section) -> list[tuple[str, Any]]:
    """(name, value) pairs of a section given as a ConfigDict or a dict."""
    if isinstance(section, ConfigDict):
        return list(section.items())
    if isinstance(section, Mapping):
        return list(section.items())
    raise ValueError(f"expected a section (ConfigDict or dict), got {type(section).__name__}: {section!r}")


_DROPPED: contextvars.ContextVar = contextvars.ContextVar("dropped_fields", default=None)


@contextlib.contextmanager
def dropping_unknown_fields() -> Iterator[list]:
    """Inside, `merge` drops fields the schemas no longer have instead of failing, and lists
    them: for configs saved by earlier versions (a run's checkpoint) that only need to rebuild
    that run's model."""
    dropped: list = []
    token = _DROPPED.set(dropped)
    try:
        yield dropped
    finally:
        _DROPPED.reset(token)


def merge(
    defaults: ConfigDict,
    given,
    where: str,
    *,
    free_form: tuple[str, ...] = (),
    typed: Mapping[str, Callable[[str], ConfigDict]] | None = None,
) -> ConfigDict:
    """`defaults` updated in place by the fields of `given` (a ConfigDict or dict) and returned.

    `where` names the section in error messages ("config.model"). `free_form`: fields whose value
    is a mapping of the user's own keys (taken whole). `typed`: fields whose defaults depend on
    their own `type` field (e.g. the neck: FPN or NAS-FPN), as `type -> defaults`.
    """
    typed = typed or {}
    for key, value in fields(given):
        field = f"{where}.{key}"
        if key not in defaults:
            if _DROPPED.get() is not None:
                _DROPPED.get().append(field)
                continue
            raise ValueError(f"{field}: unknown field; known fields of {where}: {sorted(defaults.keys())}")
        if value is None:  # None: not set, keep the default (a typed placeholder stays overridable)
            continue
        if key in typed:
            kind = dict(fields(value)).get("type", defaults[key].get("type"))
            with defaults.ignore_type():
                defaults[key] = typed[key](kind)
            merge(defaults[key], value, field)
        elif isinstance(defaults[key], ConfigDict) and key not in free_form:
            merge(defaults[key], value, field)
        else:
            if isinstance(value, ConfigDict):
                value = value.to_dict()
            with defaults.ignore_type():
                defaults[key] = as_tuples(value)
    return defaults


def choice(value: Any, allowed, field: str) -> None:
    """Fails naming `field` unless `value` is one of `allowed`."""
    if value not in allowed:
        raise ValueError(f"config.{field}={value!r}: choose one of {tuple(allowed)}.")
