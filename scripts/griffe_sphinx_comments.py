"""A griffe extension for the documentation site (mkdocs.yml): metalab's docstrings follow Sphinx habits that
griffe does not read.

* ``#:`` comments above an attribute (the options dataclasses document their fields so) become its docstring;
* cross-reference roles (:class:`~metalab.x.Y`, :mod:`metalab.x`, :func:, :meth:, :data:, :attr:) become inline
  code naming the target (its last part where the role starts with ``~``).
"""
from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import griffe

ROLE = re.compile(r":(?:class|mod|func|meth|data|attr|exc|obj):`(~?)([^`]+)`")


def plain_roles(text: str) -> str:
    return ROLE.sub(lambda m: f"`{m.group(2).rsplit('.', 1)[-1] if m.group(1) else m.group(2)}`", text)


@functools.cache
def source_lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


class SphinxComments(griffe.Extension):
    def on_attribute_instance(self, *, node: Any, attr: griffe.Attribute, agent: Any, **kwargs: Any) -> None:
        if attr.docstring is not None or not attr.lineno:
            return
        if not isinstance(attr.filepath, Path):
            return
        lines = source_lines(attr.filepath)
        comment: list[str] = []
        index = attr.lineno - 2  # the line above the attribute (lineno is 1-based)
        while index >= 0 and lines[index].strip().startswith("#:"):
            comment.insert(0, lines[index].strip()[2:].strip())
            index -= 1
        if comment:
            attr.docstring = griffe.Docstring(plain_roles(" ".join(comment)), lineno=index + 2, parent=attr)

    def on_instance(self, *, node: Any, obj: griffe.Object, agent: Any, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = plain_roles(obj.docstring.value)
