"""The one place that serialises: a cattrs msgpack converter with stable, hand-written tags.

Payloads and results are checked here too, before anything is recorded: only values the journal
can store faithfully get in.
"""

from __future__ import annotations

from typing import Any

import attrs
import cattrs
from cattrs.preconf.msgpack import make_converter
from cattrs.strategies import configure_tagged_union

from ._errors import PayloadError
from ._model import EVENT_TAGS, Event, JobRecord

# Journal records leave out fields at their defaults (smaller records); payloads keep every field.
converter = make_converter(omit_if_default=True)
configure_tagged_union(Event, converter, tag_generator=EVENT_TAGS.__getitem__, tag_name="t")
payload_converter = make_converter()

_INT_MIN, _INT_MAX = -(2**63), 2**64
_ALLOWED = "dict (str keys), list, tuple, str, int, float, bool, None or an attrs instance"


def encode_record(rec: JobRecord) -> bytes:
    return converter.dumps(rec)


def decode_record(data: bytes) -> JobRecord:
    return converter.loads(data, JobRecord)


def encode_event(ev: Event) -> bytes:
    return converter.dumps(ev, unstructure_as=Event)


def decode_event(data: bytes) -> Event:
    return converter.loads(data, Event)  # type: ignore[arg-type]


def normalize(value: Any, what: str = "payload") -> Any:
    """``value`` as the journal stores it (tuples as lists, attrs instances as dicts).

    Raises :class:`PayloadError` naming the offending path where any part of it is not storable.
    """
    return _normalize(value, what)


def _normalize(value: Any, path: str) -> Any:
    if value is None or isinstance(value, (str, bool, float)):
        return value
    if isinstance(value, int):
        if not _INT_MIN <= value < _INT_MAX:
            raise PayloadError(f"{path}: int {value} is out of range (-2**63 <= n < 2**64)")
        return value
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise PayloadError(f"{path}: dict keys must be str (got {key!r})")
            out[key] = _normalize(item, f"{path}[{key!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [_normalize(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if attrs.has(type(value)):
        try:
            plain = payload_converter.unstructure(value)
        except Exception as exc:  # noqa: BLE001 - reported as the payload's fault
            raise PayloadError(f"{path}: cannot unstructure {type(value).__name__}: {exc}") from exc
        return _normalize(plain, path)
    raise PayloadError(f"{path}: {type(value).__name__} is not storable (allowed: {_ALLOWED})")


def structure(value: Any, cls: type) -> Any:
    """A stored payload as an instance of ``cls`` (a queue's ``payload_type``)."""
    return payload_converter.structure(value, cls)


def check_structures(value: Any, cls: type, what: str = "payload") -> None:
    """PayloadError where a stored ``value`` would not structure as ``cls``."""
    try:
        payload_converter.structure(value, cls)
    except (cattrs.BaseValidationError, TypeError, ValueError, KeyError) as exc:
        raise PayloadError(f"{what} does not structure as {cls.__name__}: {exc}") from exc
