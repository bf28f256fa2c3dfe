"""Choosing the kmock reaction that answers a request, at a cost independent of the open requests.

kmock's ``RawHandler._handle`` decides whether a reaction sees a request by iterating the reaction's
view over every request the root holds and evaluating the filters on each (``request in view``): "the
only sure way to check if the filters see the request". The emulator forgets a request once served,
but a watch is held for as long as it streams, so with the operator's dozen open watches each request
cost a dozen filter evaluations per reaction (43% of the emulator's CPU at 200 tenants). It also sorted
the reactions by priority again on every request.

:func:`react` chooses exactly as kmock does (same priority order, same skipping of depleted reactions,
same fall-through on a non-actionable match), with three differences that keep the answer the same:

- the priority order is computed once per set of reactions (it changes only when ``<<`` adds one);
- a reaction whose view is a plain chain of criteria (``k.fallback['get', ...]``, ``k[kmock.action.LIST]``:
  kmock's HTTP and Kubernetes criteria, priorities, nothing else) is tested by checking only the
  criteria it sets, each with kmock's own ``_check``, instead of walking every field of every node
  (kmock checks the unset ones too; they match anything);
- when the emulator does not keep its history (``keep_requests=False``), each reaction's filters see
  the request being matched alone, as they would if it were the only request in flight. Slices such as
  ``k[...][:1]`` count the requests a view sees; without history they already saw only the requests
  still open, an accident of timing, so a reaction now answers a request the same way whatever else
  is streaming. With ``keep_requests=True`` kmock's own matching runs, over the whole history.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp.web
import attrs
import kmock
from kmock._internal.dsl import Filter, Priority
from kmock._internal.filtering import Criteria, HTTPCriteria, K8sCriteria
from kmock._internal.rendering import ReactionMismatchError

Getter = Callable[[kmock.Request], Any]
# What each field of kmock's criteria is checked against, and whether as a glob: as their __call__ reads.
_FIELDS: dict[type[Criteria], tuple[tuple[str, Getter, bool], ...]] = {
    HTTPCriteria: (
        ("method", lambda r: r.method, False),
        ("params", lambda r: r.params, False),
        ("headers", lambda r: r.headers, False),
        ("cookies", lambda r: r.cookies, False),
        ("path", lambda r: r.url.path, True),
        ("text", lambda r: r.text, False),
        ("body", lambda r: r.body, False),
        ("data", lambda r: r.data, False),
    ),
    K8sCriteria: (
        ("method", lambda r: r.method, False),
        ("action", lambda r: r.action, False),
        ("resource", lambda r: r.resource, False),
        ("subresource", lambda r: r.subresource, False),
        ("namespace", lambda r: r.namespace, True),
        ("name", lambda r: r.name, True),
    ),
}
# Only while the criteria have exactly these fields (another kmock version: its own matching, always).
_FAST = {
    kind: fields
    for kind, fields in _FIELDS.items()
    if {f.name for f in attrs.fields(kind)} == {name for name, _, _ in fields}
}
Check = tuple[Criteria, tuple[tuple[Any, Getter, bool], ...]]


def priority_order(priorities: Sequence[tuple[float, ...]]) -> list[int]:
    """Indexes of the reactions, highest priority first, ties in registration order (kmock's rule:
    priorities of mixed lengths are padded with zeroes, so ``fallback ** N`` is a sub-priority)."""
    width = max((len(p) for p in priorities), default=0)
    keys = [tuple(-p for p in priority) + (0,) * (width - len(priority)) for priority in priorities]
    return sorted(range(len(keys)), key=lambda index: keys[index])


class ReactionChooser:
    """The reactions of one kmock root in priority order, recomputed only when the set changes."""

    def __init__(self) -> None:
        self._ids: tuple[int, ...] = ()
        self._ordered: list[tuple[Any, list[Check] | None]] = []

    def ordered(self, root: Any) -> list[tuple[Any, list[Check] | None]]:
        """The reactions by priority, each with its criteria when its view is a plain chain of them."""
        payloads: Sequence[Any] = root._payloads
        ids = tuple(map(id, payloads))
        if ids != self._ids:
            order = priority_order([payload.priorities for payload in payloads])
            self._ordered = [(payloads[index], plain_criteria(payloads[index]._source, root)) for index in order]
            self._ids = ids
        return self._ordered

    async def react(self, root: Any, request: kmock.Request, *, alone: bool) -> aiohttp.web.StreamResponse:
        """Answer with the first reaction (by priority) whose filters see the request; ``alone``: the
        filters see this request only, not every request the root holds (see the module docstring)."""
        for payload, checks in self.ordered(root):
            if payload._disabled.is_set():
                continue
            if alone and checks is not None:
                if not all(_passes(criteria, fields, request) for criteria, fields in checks):
                    continue
            elif not _sees(root, payload, request, alone=alone):
                continue
            try:
                response: aiohttp.web.StreamResponse = await payload(request)
                return response
            except ReactionMismatchError:  # either a mismatch or depletion, as in kmock
                payload._disabled.set()
            except NotImplementedError:  # matched, but nothing to respond with
                pass
        raise NotImplementedError(
            "Undefined server behaviour: no reaction matching the request is defined. "
            "Consider adding a catch-all fallback reaction: `kmock.fallback << 404`."
        )


def _sees(root: Any, payload: Any, request: kmock.Request, *, alone: bool) -> bool:
    if not alone:
        return request in payload._source
    held = root._requests
    root._requests = [request]  # synchronous: no other request runs until it is restored
    try:
        return request in payload._source
    finally:
        root._requests = held


def plain_criteria(view: Any, root: Any) -> list[Check] | None:
    """The criteria a view applies when it is only filters (of kmock's HTTP and Kubernetes criteria) and
    priorities down to ``root``, each with the fields it sets; None for any other view (callables, slices,
    groups, exclusions, streams, other roots): those are matched by kmock's own iteration."""
    checks: list[Check] = []
    node = view
    while node is not root:
        if type(node) is Filter and type(node.criteria) in _FAST:
            fields = _FAST[type(node.criteria)]
            used = tuple((getattr(node.criteria, name), get, glob) for name, get, glob in fields)
            checks.append((node.criteria, tuple(field for field in used if field[0] is not ...)))
        elif type(node) is not Priority:
            return None
        node = getattr(node, "_source", None)
        if node is None:
            return None
    return checks


def _passes(criteria: Criteria, fields: tuple[tuple[Any, Getter, bool], ...], request: kmock.Request) -> bool:
    return all(_check(criteria, pattern, get(request), glob) for pattern, get, glob in fields)


_ENUM_CHECKS: dict[tuple[enum.Enum, enum.Enum, bool], bool] = {}


def _check(criteria: Criteria, pattern: Any, value: Any, glob: bool) -> bool:
    """kmock's check of one field; an enum against an enum (a method, an action) remembered: its answer
    depends on the two alone, and kmock reaches a mismatch through regular expressions of their names."""
    if not (isinstance(pattern, enum.Enum) and isinstance(value, enum.Enum)):
        return criteria._check(pattern, value, glob=glob)
    key = (pattern, value, glob)
    known = _ENUM_CHECKS.get(key)
    if known is None:
        unnarrowed: Any = pattern  # kmock types its patterns as a union that names no Enum
        known = _ENUM_CHECKS[key] = criteria._check(unnarrowed, value, glob=glob)
    return known
