"""Messages that cross a process, as typed values: one registry, one codec, one rule.

Every message shoal's processes send each other (server and site agent, server and workflow
process, agent and training script, simulator and its workers) is a frozen dataclass registered
here with its channel, its type name, who sends it and who receives it. ``encode`` turns one into
the JSON object that travels; ``decode`` turns a received object back into the typed value or
says why it cannot. Grep a message's class name to find every sender and every reader.

The one rule for what a receiver does not know (decisions/0029):

- A field it does not know is ignored: a sender may add fields (with defaults) without a new
  version.
- ``null`` for a field that has a default is that default (and a field whose value is a default
  of None is left out); a missing required field or a value of the wrong type is ``BadMessage``.
- A change a receiver cannot ignore gives the message a new version (``VERSION``, sent as ``"v"``
  when above 1). A message of a type the receiver does not know, or of a newer version than it
  knows, is ``UnknownMessage``: the receiver logs one notice per kind and drops it (``Dispatch``).

Standard library only: the client API imports this in the user's training script.
"""

from __future__ import annotations

import dataclasses
import logging
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar, Union

#: The key of a message's version; absent means 1.
VERSION_KEY = "v"
#: Kinds of unknown message a receiver logs per peer before it stops saying (a flood of them
#: must not fill a log).
UNKNOWN_KINDS_LOGGED = 16


class Channel:
    """A connection between two kinds of process and the key its messages name their type by."""

    def __init__(self, name: str, key: str, description: str) -> None:
        self.name = name
        self.key = key
        self.description = description

    def __repr__(self) -> str:
        return f"Channel({self.name!r})"


#: The server and a site agent: a WebSocket the agent dials (server/site_routes.py, site/agent.py).
SITE = Channel("site", "type", "site agent ↔ server (WebSocket, JSON text frames)")
#: The server and a job's workflow process: an inherited socketpair, JSON lines (scheduler/runner.py and
#: controller_channel.py, workflows/base.py); the simulator's PoolTransport stands in for the server.
CONTROLLER = Channel("controller", "op", "workflow process ↔ server (socketpair, JSON lines)")
#: A site agent and its job's training script: an inherited socketpair, JSON lines (site/job.py,
#: fl/client.py); the simulator's worker stands in for the agent.
SCRIPT = Channel("script", "op", "training script ↔ site agent (socketpair, JSON lines)")
#: Two server replicas sharing a PostgreSQL store: rows of its ``site_mail`` table, a NOTIFY as
#: the wake-up (server/relay.py, decisions/0048). What a job's replica says to a site held by
#: another replica, and what that site says back about the job.
REPLICA = Channel("replica", "relay", "server replica ↔ server replica (rows in the shared store)")
CHANNELS = (SITE, CONTROLLER, SCRIPT, REPLICA)

# Who talks (the "sender"/"receiver" of a message).
SERVER = "server"
AGENT = "site agent"
WORKFLOW = "workflow"
SCRIPT_PROCESS = "training script"


class BadMessage(ValueError):
    """A message of a known type and version that does not have the fields its type needs."""


class UnknownMessage(ValueError):
    """A message of a type the receiver does not know, or of a newer version than it knows."""

    def __init__(self, kind: str, version: int = 1) -> None:
        shown = kind if version == 1 else f"{kind} v{version}"
        super().__init__(f"unknown message {shown!r}")
        self.kind = kind


class Message:
    """The base of every registered message; ``register`` sets the class variables."""

    TYPE: ClassVar[str]
    CHANNEL: ClassVar[Channel]
    SENDER: ClassVar[str]
    RECEIVER: ClassVar[str]
    VERSION: ClassVar[int] = 1


M = TypeVar("M", bound=Message)
Check = Callable[[Any, str], Any]

#: channel name -> message type -> class
REGISTRY: dict[str, dict[str, type[Message]]] = {}
_FIELDS: dict[type[Any], list[tuple[str, Check, Any, bool]]] = {}  # name, check, default, flattened


def register(
    channel: Channel, kind: str, *, sender: str, receiver: str, version: int = 1
) -> Callable[[type[M]], type[M]]:
    """Class decorator (above ``@dataclass(frozen=True, slots=True)``): ``cls`` is the message
    ``kind`` on ``channel``, sent by ``sender`` to ``receiver``."""

    def add(cls: type[M]) -> type[M]:
        table = REGISTRY.setdefault(channel.name, {})
        if kind in table:
            raise TypeError(f"{channel.name} message {kind!r} is registered twice")
        cls.TYPE, cls.CHANNEL, cls.VERSION = kind, channel, version
        cls.SENDER, cls.RECEIVER = sender, receiver
        _fields_of(cls)
        table[kind] = cls
        return cls

    return add


T = TypeVar("T")


#: ``field(metadata={FLAT: True})`` on a record-typed field: its fields travel as the message's
#: own (``ResultInfo`` in a result, so the JSON is the header a script writes); without it a
#: record travels as an object under the field's name.
FLAT = "flat"


def record(cls: type[T]) -> type[T]:
    """Class decorator for a dataclass that travels inside messages (``ResultInfo``, say)."""
    _fields_of(cls)
    return cls


def encode(message: Message) -> dict[str, Any]:
    """The JSON object ``message`` travels as: its type under its channel's key, its fields."""
    out: dict[str, Any] = {message.CHANNEL.key: message.TYPE}
    if message.VERSION != 1:
        out[VERSION_KEY] = message.VERSION
    out.update(_encode_fields(message))
    return out


def _encode_fields(value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, _, default, flattened in _fields_of(type(value)):
        item = getattr(value, name)
        if item is None and default is None:
            continue  # absent and null are the same; absent is what older peers expect
        if flattened:
            out.update(_encode_fields(item))
        elif type(item) in _FIELDS:
            out[name] = _encode_fields(item)
        else:
            out[name] = list(item) if isinstance(item, tuple | frozenset) else item
    return out


def decode(channel: Channel, data: Mapping[str, Any]) -> Message:
    """The typed message in ``data`` (one JSON object received on ``channel``).

    UnknownMessage: a type or version this side does not know. BadMessage: a known one without
    the fields it needs."""
    kind = data.get(channel.key)
    if not isinstance(kind, str):
        raise UnknownMessage(repr(kind)[:40])
    cls = REGISTRY.get(channel.name, {}).get(kind)
    version = data.get(VERSION_KEY, 1)
    if version is None:
        version = 1
    if type(version) is not int or version < 1:
        raise BadMessage(f"{kind[:40]}: '{VERSION_KEY}' must be a whole number >= 1")
    if cls is None or version > cls.VERSION:
        raise UnknownMessage(kind[:40], version)
    try:
        return typing.cast(Message, _decode_fields(cls, data))
    except BadMessage as exc:
        raise BadMessage(f"{kind}: {exc}") from None


def decode_record(cls: type[M] | type[Any], data: Mapping[str, Any]) -> Any:
    """A ``record`` (or message) built from ``data``'s fields, by the same rule as ``decode``."""
    return _decode_fields(cls, data)


def _decode_fields(cls: type[Any], data: Mapping[str, Any]) -> Any:
    values: dict[str, Any] = {}
    for name, check, default, flattened in _fields_of(cls):
        if flattened:
            values[name] = check(data, name)
            continue
        value = data.get(name)
        if value is None:
            if default is not dataclasses.MISSING:
                continue  # the dataclass's default (null and absent are the same)
            try:
                values[name] = check(None, name)
            except BadMessage:
                raise BadMessage(f"'{name}' is missing") from None
            continue
        values[name] = check(value, name)
    return cls(**values)


# --- field checks, made once per class from its type hints ---------------------------------


def _fields_of(cls: type[Any]) -> list[tuple[str, Check, Any, bool]]:
    known = _FIELDS.get(cls)
    if known is not None:
        return known
    hints = typing.get_type_hints(cls)
    made: list[tuple[str, Check, Any, bool]] = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        default: Any = f.default
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory
        flattened = bool(f.metadata.get(FLAT)) and dataclasses.is_dataclass(hint) and hint in _FIELDS
        made.append((f.name, _check_for(hint, flattened), default, flattened))
    _FIELDS[cls] = made
    return made


def _show(value: object) -> str:
    """A short description of a bad value, safe to log whatever it is."""
    if isinstance(value, dict | list):
        return type(value).__name__
    return repr(value)[:40]


def _check_for(hint: Any, flattened: bool = False) -> Check:  # noqa: C901 (one branch per kind, top down)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return lambda v, name: v
    if hint is bool:
        return _simple(lambda v: isinstance(v, bool), "true or false")
    if hint is int:
        return _simple(lambda v: type(v) is int, "a whole number")
    if hint is float:
        return _number
    if hint is str:
        return _simple(lambda v: isinstance(v, str), "a string")
    if origin in (types.UnionType, Union):
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"unsupported message field type {hint!r}")
        check = _check_for(inner[0])
        return lambda v, name: None if v is None else check(v, name)
    if origin in (list, tuple, frozenset):
        item = _check_for(args[0])
        build: Callable[[Any], Any] = {list: list, tuple: tuple, frozenset: frozenset}[origin]

        def sequence(v: Any, name: str) -> Any:
            if not isinstance(v, list):
                raise BadMessage(f"'{name}' must be a list, not {_show(v)}")
            return build(item(x, name) for x in v)

        return sequence
    if origin is dict:
        value_check = _check_for(args[1])

        def mapping(v: Any, name: str) -> Any:
            if not isinstance(v, dict) or not all(isinstance(k, str) for k in v):
                raise BadMessage(f"'{name}' must be an object, not {_show(v)}")
            return {k: value_check(x, name) for k, x in v.items()}

        return mapping
    if isinstance(hint, type) and dataclasses.is_dataclass(hint) and hint in _FIELDS:
        if flattened:  # its fields are the message's own
            return lambda data, name: _decode_fields(hint, data)

        def nested(v: Any, name: str) -> Any:
            if not isinstance(v, dict):
                raise BadMessage(f"'{name}' must be an object, not {_show(v)}")
            try:
                return _decode_fields(hint, v)
            except BadMessage as exc:
                raise BadMessage(f"{name}: {exc}") from None

        return nested
    raise TypeError(f"unsupported message field type {hint!r}")


def _simple(test: Callable[[Any], bool], what: str) -> Check:
    def check(v: Any, name: str) -> Any:
        if not test(v):
            raise BadMessage(f"'{name}' must be {what}, not {_show(v)}")
        return v

    return check


def _number(v: Any, name: str) -> float:
    """int or float (not bool) as a float; NaN and infinities pass (a diverged loss is news)."""
    if not isinstance(v, int | float) or isinstance(v, bool):
        raise BadMessage(f"'{name}' must be a number, not {_show(v)}")
    try:
        return float(v)
    except OverflowError:  # a whole number of hundreds of digits
        raise BadMessage(f"'{name}' is out of range") from None


# --- the receiving side: a table from message class to handler ------------------------------


class UnknownKinds:
    """Says once per kind (at most UNKNOWN_KINDS_LOGGED kinds per peer) that a message of a
    type the receiver does not handle was dropped: a newer peer's, or a flood."""

    def __init__(self, log: logging.Logger, where: str) -> None:
        self._log = log
        self._where = where
        self._seen: set[str] = set()

    def __call__(self, kind: str) -> None:
        if kind not in self._seen and len(self._seen) < UNKNOWN_KINDS_LOGGED:
            self._seen.add(kind)
            self._log.warning("%s sent an unknown message %r; ignored", self._where, kind)


class Dispatch:
    """What a receiver does with a message: decode it and look its handler up in a table (one
    per receiving side, keyed by message class). An unknown message is logged once per kind
    (``UnknownKinds``) and dropped; a bad one raises BadMessage for the receiver to answer as
    its channel does (refuse it, or end the job)."""

    def __init__(
        self,
        channel: Channel,
        handlers: Mapping[type[Message], Callable[[Any], Any]],
        log: logging.Logger,
        where: str,
    ) -> None:
        for cls in handlers:
            if REGISTRY.get(channel.name, {}).get(cls.TYPE) is not cls:
                raise TypeError(f"{cls.__name__} is not a {channel.name} message")
        self.channel = channel
        self.handlers = dict(handlers)
        self.unknown = UnknownKinds(log, where)

    def handler(self, data: Mapping[str, Any]) -> tuple[Message, Callable[[Any], Any]] | None:
        """The decoded message and its handler; None for one this side does not handle."""
        try:
            message = decode(self.channel, data)
        except UnknownMessage as exc:
            self.unknown(exc.kind)
            return None
        handle = self.handlers.get(type(message))
        if handle is None:
            self.unknown(message.TYPE)
            return None
        return message, handle
