"""Values the saver has seen as objects: what they were stored as, and copies of what it read.

Two caches, both per saver instance and bounded, so that an invoke costs
little more than its new messages:

* :class:`WrittenObjects` remembers, for an object the saver serialised (or
  handed out from ``get_tuple``), its content key and its *shape*: the
  objects it is made of, two levels deep (:func:`shape`). A later ``put``
  that meets the same object with the same shape takes the key instead of
  serialising it again. An object edited in place (a field set, an item of
  a container it holds added, replaced or removed) has another shape and is
  serialised as before; a value whose shape cannot be taken is always
  serialised. The cache holds the objects its shapes name, so their ``id``
  cannot be reused while an entry exists.
* :class:`DecodedObjects` keeps one decoded object per content key, never
  handed out: ``get_tuple`` returns a copy of it (:func:`fresh_copy`, a deep
  copy of plain data and pydantic models, about a third of the cost of
  decoding a message again), so no two callers share an object.

Measured on 1 KB chat messages (hot loop, 2 loaded cores): serialising one
3.05 us, decoding it 8.3 us (pydantic validation); checking one met again
0.7 us when its containers are empty (:func:`unchanged`), 1.37 us with a
new shape; a fresh copy with its entry 1.0-1.4 us (:data:`Recipe`). For a
160-message thread (micro-benchmark, best of 300): a ``get_tuple`` from
memory copies and remembers the list in 345 us (470 us when each copy's
shape went through a map by id), a ``put`` that adds a message plans in
170 us (227 us when each list was remembered and looked up by id).
"""

from __future__ import annotations

import datetime
import decimal
import operator
import threading
import uuid
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from itertools import compress, islice
from typing import Any, cast

from pydantic import BaseModel

# Types whose values cannot change.
ATOMS: frozenset[type] = frozenset({str, bytes, int, float, complex, bool, type(None)})
# Immutable values a shape stops at inside a value.
LEAVES: frozenset[type] = ATOMS | {
    datetime.datetime,
    datetime.date,
    datetime.time,
    datetime.timedelta,
    datetime.timezone,
    uuid.UUID,
    decimal.Decimal,
}

_is = operator.is_
# Per class: whether it is a pydantic model (an isinstance check through
# pydantic's metaclass costs 0.5 us).
_IS_MODEL: dict[type, bool] = {}


def shape(value: Any) -> list[Any] | None:
    """What the guard compares of ``value``: the objects it is made of, two levels deep.

    For a dict, a list, a tuple, a pydantic model or another object with a
    ``__dict__``: its type, size, keys (a dict's) and values, and, for each
    value that is a dict, list, tuple, set or object, its size and its items
    (keys and values). For a pydantic model, its extra fields too. An
    immutable value is its own shape; anything else (no ``__dict__``, or
    holding a value without one that is not known to be immutable) has
    none, and is always serialised.

    Two shapes of one object are the same objects (:func:`same_shape`) unless
    an attribute or a field was set (``msg.content = ...``, ``msg.content +=
    ...``), or an item of a container the object holds was added, removed
    or replaced (``msg.additional_kwargs[k] = v``, ``msg.tool_calls.append(...)``,
    ``msg.content[0] = {...}``). An edit one level further down
    (``msg.tool_calls[0]["args"]["x"] = 1``) is not seen: see
    ``docs/architecture.md#unchanged-values``. A chat message: about 1 us.
    """
    t = type(value)
    if t in LEAVES:
        return [value]
    vals: Iterable[Any]
    if t is dict:
        out = [value, t, len(value)]
        out.extend(value)
        vals = value.values()
    elif t is list or t is tuple:
        out = [value, t, len(value)]
        vals = value
    else:
        try:
            d = value.__dict__
        except AttributeError:
            return None
        out = [value, t, len(d)]
        vals = d.values()
    out.extend(vals)
    add = out.append
    for v in vals:
        tv = type(v)
        if tv in LEAVES:
            continue
        if not v and (tv is list or tv is dict):
            add(0)  # what _inner adds for an empty container, without the call
        elif not _inner(v, out):
            return None
    model = _IS_MODEL.get(t)
    if model is None:
        model = _IS_MODEL[t] = issubclass(t, BaseModel)
    if model:
        extra = value.__pydantic_extra__
        add(extra)
        if extra:
            add(len(extra))
            out.extend(extra)
            out.extend(extra.values())
    return out


def _inner(v: Any, out: list[Any]) -> bool:
    """The second level of :func:`shape`: a value's size and items; False if it has none."""
    tv = type(v)
    if tv is list or tv is tuple:
        out.append(len(v))
        if v:
            out.extend(v)
    elif tv is dict:
        out.append(len(v))
        if v:
            out.extend(v)
            out.extend(v.values())
    elif tv is set or tv is frozenset:
        out.append(len(v))
        out.extend(v)
    else:
        d = getattr(v, "__dict__", None)
        if d is None:
            return False  # slots or a C type: what it holds cannot be seen
        out.append(d)
        out.append(len(d))
        out.extend(d.values())
    return True


def same_shape(a: Sequence[Any], b: Sequence[Any]) -> bool:
    """Whether two shapes are of the same objects (sizes are small ints, compared by identity
    too: a size above 256 may compare unequal, which only costs a serialisation)."""
    return len(a) == len(b) and all(map(_is, a, b))


Entry = tuple[list[Any], bytes, tuple[int, ...] | None]
"""What :class:`WrittenObjects` keeps of an object: its shape, its content key, and
for a *plain* model (see :func:`plain_fields`), where its containers are."""


def plain_fields(shp: list[Any]) -> tuple[int, ...] | None:
    """For the shape of a pydantic model whose fields are immutable values and empty
    lists and dicts, and whose extra fields are None or empty (a chat message, most
    often): the positions of those containers among its fields; else None.

    Such a shape is ``[model, class, n, *fields, 0 per container, extra]``, so
    :func:`unchanged` can check it without building a new one.
    """
    if len(shp) < 4 or not _IS_MODEL.get(shp[1]):
        return None
    n = shp[2]
    conts = tuple(i for i, v in enumerate(shp[3 : 3 + n]) if type(v) is list or type(v) is dict)
    # Each empty container adds one 0; anything else (a container with items,
    # another object, extra fields) adds more.
    if len(shp) != 4 + n + len(conts) or shp[-1]:
        return None
    return conts


def unchanged(obj: Any, entry: Entry) -> bool:
    """Whether ``obj`` has the shape its entry holds (``same_shape(entry[0], shape(obj))``),
    checked in place for a plain model (0.5 us for a chat message, not 1.4)."""
    shp, _, conts = entry
    if conts is None:
        now = shape(obj)
        return now is not None and same_shape(shp, now)
    if shp[0] is not obj or type(obj) is not shp[1]:
        return False
    d = obj.__dict__
    n = shp[2]
    if len(d) != n or not all(map(_is, d.values(), islice(shp, 3, 3 + n))):
        return False
    for i in conts:
        if shp[3 + i]:  # the value itself (checked above)
            return False  # an item was added to an empty container
    extra = obj.__pydantic_extra__
    return extra is shp[-1] and not extra


def entry_of(obj: Any, key: bytes) -> Entry | None:
    """The entry of ``obj`` (serialised as ``key``), or None if it has no shape."""
    shp = shape(obj)
    return None if shp is None else (shp, key, plain_fields(shp))


class NotCopyable(Exception):
    """A value :func:`fresh_copy` does not copy; it is decoded afresh instead."""


def fresh_copy(value: Any) -> Any:
    """A deep copy of plain data (dict, list, tuple, immutable leaves) and pydantic models.

    Built as ``BaseModel.__deepcopy__`` builds one (no validation), without
    ``copy.deepcopy``'s memo. Equal to decoding the value's payload again
    when ``value`` was itself decoded: decoding never shares an object
    between two places of a value either.

    Raises:
        NotCopyable: Anything else (the caller decodes instead).
    """
    t: Any = type(value)
    if t in ATOMS:
        return value
    if t is list:
        return [x if type(x) in ATOMS else fresh_copy(x) for x in value] if value else []
    if t is dict:
        return _copy_dict(value) if value else {}
    if t is tuple:
        return tuple([x if type(x) in ATOMS else fresh_copy(x) for x in value])
    model = _MODELS.get(t)
    if model is None:
        model = _MODELS[t] = _plain_model(t)
    if model:
        new = t.__new__(t)
        setattr_ = object.__setattr__
        setattr_(new, "__dict__", _copy_dict(value.__dict__))
        extra = value.__pydantic_extra__
        setattr_(new, "__pydantic_extra__", None if extra is None else fresh_copy(extra))
        setattr_(new, "__pydantic_fields_set__", set(value.__pydantic_fields_set__))
        private = getattr(value, "__pydantic_private__", None)
        setattr_(new, "__pydantic_private__", None if private is None else _copy_dict(private))
        return new
    raise NotCopyable(t.__qualname__)


# Per class: whether it is a pydantic model copied as BaseModel.__deepcopy__ copies.
_MODELS: dict[type, bool] = {}


def _plain_model(t: type) -> bool:
    return (
        issubclass(t, BaseModel)
        and t.__deepcopy__ is BaseModel.__deepcopy__
        and t.__copy__ is BaseModel.__copy__
    )


def _copy_dict(d: dict[Any, Any]) -> dict[Any, Any]:
    # Keys are hashable, so immutable in practice; values are copied. Empty
    # containers inline: a chat message holds four (1.5 us a copy, not 2.3).
    out = d.copy()
    for k, x in d.items():
        tx = type(x)
        if tx in ATOMS:
            continue
        out[k] = [] if tx is list and not x else {} if tx is dict and not x else fresh_copy(x)
    return out


Scope = tuple[str, str, str]
"""(thread id, checkpoint namespace, channel)."""


class _Remembered:
    """What :class:`WrittenObjects` holds for one channel (never changed once published)."""

    __slots__ = ("by_id", "count", "extra", "in_order", "ordered")

    def __init__(
        self, ordered: list[Entry | None], extra: dict[int, Entry], in_order: int | None = None
    ) -> None:
        # The entries of the channel's latest list, in its order (an item met
        # at the same place in the next list is found without its id) ...
        self.ordered = ordered
        # ... the entries of items written to the channel since (a task's writes) ...
        self.extra = extra
        # ... and the ordered ones by id, built at the first item met elsewhere.
        self.by_id: dict[int, Entry] | None = None
        # How many of the ordered entries are entries (not None).
        self.in_order = len(ordered) - ordered.count(None) if in_order is None else in_order
        self.count = self.in_order + len(extra)

    def moved(self) -> dict[int, Entry]:
        """The entries of the latest list by id."""
        by_id = self.by_id
        if by_id is None:
            by_id = self.by_id = {id(e[0][0]): e for e in self.ordered if e is not None}
        return by_id


class WrittenObjects:
    """Per list channel of a thread: the objects of its latest list, with their shapes and keys.

    A ``put`` looks a list's items up here (:meth:`lookup`), then the entry of
    that channel becomes the items of that list (:meth:`replace`); a
    ``get_tuple`` replaces it with the copies it hands out. An entry holds
    the objects its shapes name (so their ids stay unique) only until the
    channel's next list: a graph, which reloads its state at every invoke,
    leaves nothing stale behind. Channels least recently written go first
    beyond ``items`` objects in all.

    Thread-safe: an entry is never changed once published, only replaced.
    """

    __slots__ = ("_count", "_data", "_items", "_lock")

    def __init__(self, items: int) -> None:
        self._items = items
        self._count = 0
        self._data: OrderedDict[Scope, _Remembered] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._count

    def lookup(self, scope: Scope, objs: Sequence[Any]) -> list[Entry | None]:
        """Per object: its entry if it is unchanged since it was remembered, else None.

        An object at the place it had in the remembered list is found there
        (a list that extends the last one, the usual put, builds no map by id).
        """
        held = self._data.get(scope)
        if held is None:
            return [None] * len(objs)
        ordered = held.ordered
        n = len(ordered)
        extra = held.extra.get
        by_id: dict[int, Entry] | None = None
        out: list[Entry | None] = []
        for i, obj in enumerate(objs):
            entry = ordered[i] if i < n else None
            if entry is None or entry[0][0] is not obj:
                entry = extra(id(obj))
                if entry is None:
                    if by_id is None:
                        by_id = held.moved()
                    entry = by_id.get(id(obj))
            out.append(entry if entry is not None and unchanged(obj, entry) else None)
        return out

    def replace(self, scope: Scope, entries: list[Entry | None]) -> None:
        """Make ``entries`` (None for an object without a shape), in their list's order,
        the channel's; the list is held as it is (the caller lets it go)."""
        held = _Remembered(entries, {})
        with self._lock:
            self._put(scope, held)

    def add(self, scope: Scope, entries: Iterable[Entry | None]) -> None:
        """Add ``entries`` to the channel's (a task's writes, which its next list holds)."""
        new = {id(e[0][0]): e for e in entries if e is not None}
        if not new:
            return
        with self._lock:
            old = self._data.get(scope)
            if old is None:
                self._put(scope, _Remembered([], new))
            else:
                self._put(scope, _Remembered(old.ordered, {**old.extra, **new}, old.in_order))

    def _put(self, scope: Scope, held: _Remembered) -> None:
        # The caller holds the lock.
        data = self._data
        old = data.pop(scope, None)
        self._count += held.count - (old.count if old is not None else 0)
        data[scope] = held
        while self._count > self._items and len(data) > 1:
            _, dropped = data.popitem(last=False)
            self._count -= dropped.count

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._count = 0


# Marks a key :meth:`DecodedObjects.copies` has no object for.
MISSING: Any = object()


# Setting a new model's slots through their descriptors, not `object.__setattr__`
# by name, and making it with `object.__new__`: a copy of a chat message
# measured 0.44 us against 0.70 us.
_new_object = object.__new__
_set_dict = BaseModel.__dict__["__dict__"].__set__
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__


Recipe = tuple[
    type,
    dict[str, Any],
    tuple[tuple[str, type], ...],
    frozenset[str],
    bool,
    tuple[int, ...],
    bool,
    bool,
    tuple[int, ...],
]
"""How to copy a decoded pydantic model fast: its class, its fields, which of them
hold containers (copied, the empty ones as new empties), its fields set,
whether its extra fields are None (else an empty dict), the positions of
the containers among its fields, whether all those containers are empty,
whether the class is made with ``object.__new__``, and a 0 per container
(what :func:`shape` adds for an empty one)."""


def _recipe(obj: Any) -> Recipe | None:
    """A :data:`Recipe` for ``obj``, or None to copy it with :func:`fresh_copy`."""
    t = type(obj)
    model = _MODELS.get(t)
    if model is None:
        model = _MODELS[t] = _plain_model(t)
    if not model or obj.__pydantic_extra__ or getattr(obj, "__pydantic_private__", None):
        return None
    fields = obj.__dict__
    containers = []
    for k, v in fields.items():
        tv = type(v)
        if tv in LEAVES:
            continue
        if tv is not list and tv is not dict:
            return None
        containers.append((k, tv))
    extra_none = obj.__pydantic_extra__ is None
    names = list(fields)
    positions = tuple(names.index(k) for k, _ in containers)
    return (
        t,
        fields,
        tuple(containers),
        frozenset(obj.__pydantic_fields_set__),
        extra_none,
        positions,
        not any(fields[k] for k, _ in containers),
        cast(Any, t).__new__ is _new_object,
        (0,) * len(containers),
    )


def _cook(recipe: Recipe, key: bytes, out: list[Any], entries: list[Entry | None]) -> None:
    """Append a copy made by ``recipe`` (of the object decoded for ``key``) to ``out``,
    and its :data:`Entry` to ``entries``."""
    t, fields, containers, fields_set, extra_none, positions, empty, plain_new, zeros = recipe
    new = _new_object(t) if plain_new else t.__new__(t)  # type: ignore[call-overload]
    d = fields.copy()
    if empty:
        for k, tv in containers:
            d[k] = [] if tv is list else {}
    else:
        for k, _ in containers:
            d[k] = fresh_copy(fields[k])
    extra: dict[str, Any] | None = None if extra_none else {}
    _set_dict(new, d)
    _set_extra(new, extra)
    _set_fields_set(new, set(fields_set))
    _set_private(new, None)
    out.append(new)
    if not empty:
        shp = shape(new)
        assert shp is not None
        entries.append((shp, key, plain_fields(shp)))
    else:
        # What shape(new) builds: the model, its class, size and values, a 0
        # per (empty) container, and its extra fields.
        entries.append(([new, t, len(d), *d.values(), *zeros, extra], key, positions))


class DecodedObjects:
    """Content key → a decoded object, kept private (callers get :func:`fresh_copy` of it).

    Thread-safe; least recently used entries go first beyond ``size``. A
    content key is a function of its payload, so an entry is never stale.
    """

    __slots__ = ("_data", "_lock", "_size")

    def __init__(self, size: int) -> None:
        self._size = size
        self._data: OrderedDict[bytes, tuple[Any, Recipe | None]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    def copies(self, keys: Sequence[bytes]) -> tuple[list[Any], list[Entry | None]]:
        """A fresh copy of the object decoded for each key (or :data:`MISSING`), and
        per copy made by a recipe its :data:`Entry` (else None)."""
        with self._lock:
            data = self._data
            found = list(map(data.get, keys))
            # Those found become the most recently used (a loop in C: an entry is
            # a non-empty tuple, so true).
            deque(map(data.move_to_end, compress(keys, found)), maxlen=0)
        out: list[Any] = []
        entries: list[Entry | None] = []
        for key, entry in zip(keys, found, strict=True):
            if entry is None:
                out.append(MISSING)
                entries.append(None)
                continue
            obj, recipe = entry
            if recipe is not None:
                _cook(recipe, key, out, entries)
            else:
                out.append(obj if type(obj) in ATOMS else fresh_copy(obj))
                entries.append(None)
        return out, entries

    def keep(self, key: bytes, decoded: Any) -> None:
        """Keep a copy of ``decoded`` (the caller keeps ``decoded``); skipped if not copyable."""
        if type(decoded) in ATOMS:
            private = decoded
        else:
            try:
                private = fresh_copy(decoded)
            except (NotCopyable, RecursionError):
                return
        recipe = _recipe(private)
        with self._lock:
            data = self._data
            data[key] = (private, recipe)
            while len(data) > self._size:
                data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
