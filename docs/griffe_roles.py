"""A griffe extension: Sphinx roles in livehub's docstrings (:class:`~livehub.core.node.Node`,
:func:`load_settings`, :meth:`api_router`, :data:`REGISTRY`) as Markdown code spans (``Node``),
so the API reference reads as the source does instead of showing the role's markup."""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|func|meth|data|attr|mod|exc|obj):`~?([^`]+)`")


def _short(match: re.Match[str]) -> str:
    target = match.group(1)
    return f"`{target.rsplit('.', 1)[-1] if match.group(0).count('~') else target}`"


class SphinxRoles(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(_short, obj.docstring.value)
