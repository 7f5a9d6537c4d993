"""Reading YAML that may carry Python tags (TRIBE v2's config.yaml is dumped with them) as plain data.

A safe loader: ``!!python/tuple [1, 2]`` becomes the list under the tag, ``!!python/int 96`` the integer,
and no tag ever constructs an object. Both the release converter and the extraction recipe read through it.
"""

from __future__ import annotations

from pathlib import Path

import yaml

__all__ = ["load_plain_yaml"]


class _PlainLoader(yaml.SafeLoader):
    """Safe YAML that reads `!!python/...` tags as the plain data under them (tuples become lists)."""


def _plain(loader, suffix, node):
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    value = loader.construct_scalar(node)
    # !!python/int 96, !!python/float 0.1, !!python/bool true, !!python/none '': the plain value under the tag
    # (anything else stays a string, and the readers' typed field checks refuse it by name).
    try:
        if suffix in ("int", "long"):
            return int(value)
        if suffix == "float":
            return float(value)
    except ValueError:
        return value
    if suffix == "bool" and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if suffix == "none":
        return None
    return value


_PlainLoader.add_multi_constructor("tag:yaml.org,2002:python/", _plain)
_PlainLoader.add_multi_constructor("!", _plain)


def load_plain_yaml(path):
    """The document in ``path``; ValueError naming the file when it is not valid YAML."""
    path = Path(path)
    try:
        return yaml.load(path.read_text(), Loader=_PlainLoader)
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({e})") from None
