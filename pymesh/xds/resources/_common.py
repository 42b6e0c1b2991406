"""Shared parsing helpers: the error/warning context, durations, wrappers, header ops.

Every parser threads a :class:`Ctx` through; it knows the resource name (for
:class:`~pymesh.errors.ResourceInvalid`), the dotted path prefix of the part being parsed,
and collects the names of set-but-unsupported fields.
"""

from __future__ import annotations

from typing import Any, NoReturn

from pymesh.errors import ResourceInvalid
from pymesh.xds.resources import _fields, _warnings
from pymesh.xds.resources.route import NO_HEADER_OPS, AppendAction, HeaderOps, HeaderValueOption

UINT32_MAX = 2**32 - 1

# Protobuf's own Duration limits (google/protobuf/duration.proto).
_MAX_DURATION_SECONDS = 315_576_000_000


class Ctx:
    """Parsing context for one resource (or an inlined part of one)."""

    def __init__(self, kind: str, name: str, prefix: str = "", parent: Ctx | None = None) -> None:
        self.kind = kind
        self.name = name
        self.prefix = prefix
        self.parent = parent
        self.unsupported: list[str] = []

    def child(self, prefix: str, kind: str | None = None) -> Ctx:
        """A context for an inlined sub-resource at ``prefix`` (e.g. an inline route config)."""
        return Ctx(kind or self.kind, self.name, prefix, self)

    def path(self, field: str) -> str:
        if not self.prefix:
            return field
        return f"{self.prefix}.{field}" if field else self.prefix

    def fail(self, field: str, reason: str) -> NoReturn:
        """Reject the resource: ``field`` is relative to this context."""
        full = self.path(field)
        if self.parent is not None:
            self.parent.fail(full, reason)
        raise ResourceInvalid(self.name, full, reason)

    def unsupported_field(self, field: str, note: str = "") -> None:
        """Record a set-but-unsupported field; the root context reports it for a counted
        warning (logged once per resource version and field, see :mod:`._warnings`).
        ``note`` says what pymesh does instead (from the field table)."""
        self.unsupported.append(field)
        if self.parent is not None:
            self.parent.unsupported_field(self.path(field), note)
            return
        _warnings.report(self.kind, self.name, field, note)

    def check(self, msg: Any, path: str, key: str | None = None) -> None:
        """Apply the field table (:mod:`._fields`) to every set field of ``msg``.

        A warned field is reported, a NACKed one rejects the resource with the table's
        note, and an honoured enum field is checked by its value's class. ``key`` names
        the table entry when it differs from the message's full name (context-specific
        entries such as ``envoy.config.core.v3.DataSource@tls``). A field the table does
        not know (a newer xds-protos) is reported, never silently dropped.
        """
        fields = _fields.TABLE.get(key or msg.DESCRIPTOR.full_name)
        for fd, value in msg.ListFields():
            p = join(path, fd.name)
            f = fields.get(fd.name) if fields is not None else None
            if f is None:
                self.unsupported_field(p, "not in pymesh's field table (a newer xds-protos?)")
            elif f.status is _fields.Status.WARNED:
                self.unsupported_field(p, f.note)
            elif f.status is _fields.Status.NACKED:
                self.fail(p, f"{fd.name} is not supported: {f.note}")
            elif f.values is not None and fd.enum_type is not None and not fd.is_repeated:
                vd = fd.enum_type.values_by_number.get(int(value))
                if vd is None:
                    self.fail(p, f"unknown {fd.name} enum value {value}")
                status, note = f.values.get(vd.name, (_fields.Status.WARNED, "not classified"))
                if status is _fields.Status.WARNED:
                    self.unsupported_field(p, f"{vd.name}: {note}")
                elif status is _fields.Status.NACKED:
                    self.fail(p, note if vd.name in note else f"{vd.name}: {note}")


#: Per message type: the honoured fields :meth:`Ctx.check` has nothing to say about,
#: each with the enum numbers it accepts silently (None: any value). Derived from the
#: field table once per type, for parsers that run per endpoint.
_PLAIN: dict[str, dict[str, frozenset[int] | None]] = {}


def _plain_fields(descriptor: Any) -> dict[str, frozenset[int] | None]:
    out: dict[str, frozenset[int] | None] = {}
    for name, f in (_fields.TABLE.get(descriptor.full_name) or {}).items():
        if f.status is not _fields.Status.HONOURED:
            continue
        fd = descriptor.fields_by_name.get(name)
        if fd is None:
            continue
        if f.values is None or fd.enum_type is None or fd.is_repeated:
            out[name] = None
            continue
        out[name] = frozenset(
            v.number
            for v in fd.enum_type.values
            if f.values.get(v.name, (_fields.Status.WARNED, ""))[0] is _fields.Status.HONOURED
        )
    return out


def plain_fields(descriptor: Any) -> dict[str, frozenset[int] | None]:
    """The honoured fields of ``descriptor``'s message type that :meth:`Ctx.check` has
    nothing to say about (cached), for :func:`is_plain`."""
    name = descriptor.full_name
    plain = _PLAIN.get(name)
    if plain is None:
        plain = _PLAIN[name] = _plain_fields(descriptor)
    return plain


def is_plain(msg: Any, plain: dict[str, frozenset[int] | None] | None = None) -> bool:
    """True when :meth:`Ctx.check` would neither warn about nor reject any set field of
    ``msg`` (a cheap pre-test; the table stays the one source of truth). ``plain`` is
    ``plain_fields(msg.DESCRIPTOR)``, passed by callers that test many messages."""
    if plain is None:
        plain = plain_fields(msg.DESCRIPTOR)
    for fd, value in msg.ListFields():
        if fd.name not in plain:
            return False
        allowed = plain[fd.name]
        if allowed is not None and value not in allowed:
            return False
    return True


def note(key: str, field: str) -> str:
    """The field table's note for ``field`` of table entry ``key`` (for explicit warnings)."""
    return _fields.entry(key, field).note


def join(path: str, field: str) -> str:
    return f"{path}.{field}" if path else field


def duration(ctx: Ctx, d: Any, path: str) -> float:
    """google.protobuf.Duration → float seconds; rejects out-of-range or negative values."""
    seconds, nanos = int(d.seconds), int(d.nanos)
    if abs(seconds) > _MAX_DURATION_SECONDS or abs(nanos) > 999_999_999:
        ctx.fail(path, f"duration out of range (seconds={seconds}, nanos={nanos})")
    if seconds < 0 or nanos < 0:
        ctx.fail(path, f"duration must not be negative (seconds={seconds}, nanos={nanos})")
    return seconds + nanos / 1e9


def opt_duration(ctx: Ctx, msg: Any, field: str, path: str) -> float | None:
    """A Duration field → seconds, or None when unset."""
    if not msg.HasField(field):
        return None
    return duration(ctx, getattr(msg, field), join(path, field))


def wrapped(msg: Any, field: str, default: Any) -> Any:
    """Value of a google.protobuf wrapper field (UInt32Value etc.), or ``default`` if unset."""
    return getattr(msg, field).value if msg.HasField(field) else default


def type_name(type_url: str) -> str:
    """The message name of an Any type URL (whatever comes after the last ``/``)."""
    return type_url.rsplit("/", 1)[-1]


def unpack(ctx: Ctx, any_msg: Any, cls: Any, path: str) -> Any:
    """Unpack ``any_msg`` into a new ``cls``; a decode failure rejects the resource."""
    out = cls()
    try:
        ok = any_msg.Unpack(out)
    except Exception as exc:  # protobuf raises DecodeError and friends
        ctx.fail(path, f"cannot decode {type_name(any_msg.type_url)}: {exc}")
    if not ok:
        ctx.fail(path, f"expected {cls.DESCRIPTOR.full_name}, got {type_name(any_msg.type_url)}")
    return out


_FRACTION_DENOMINATORS = {0: 100, 1: 10_000, 2: 1_000_000}


def fractional_percent(ctx: Ctx, msg: Any, path: str) -> Any:
    """envoy.type.v3.FractionalPercent → matchers.FractionalPercent."""
    from pymesh.xds.resources.matchers import FractionalPercent

    denominator = _FRACTION_DENOMINATORS.get(int(msg.denominator))
    if denominator is None:
        ctx.fail(join(path, "denominator"), f"unknown denominator enum value {msg.denominator}")
    ctx.check(msg, path)
    return FractionalPercent(int(msg.numerator), denominator)


# ---- header manipulation ---------------------------------------------------------------

_APPEND_ACTIONS: dict[int, AppendAction] = {
    0: "APPEND_IF_EXISTS_OR_ADD",
    1: "ADD_IF_ABSENT",
    2: "OVERWRITE_IF_EXISTS_OR_ADD",
    3: "OVERWRITE_IF_EXISTS",
}


def _check_modifiable(ctx: Ctx, key: str, path: str) -> None:
    if not key:
        ctx.fail(path, "header name must not be empty")
    # Envoy's HeaderParser refuses to touch pseudo-headers and Host.
    if key.startswith(":") or key.lower() == "host":
        ctx.fail(path, f"header {key!r} may not be modified (':'-prefixed and host are reserved)")


def header_value_option(ctx: Ctx, msg: Any, path: str) -> HeaderValueOption:
    """envoy.config.core.v3.HeaderValueOption (legacy ``append`` folded into the action)."""
    hdr = msg.header
    key = hdr.key
    _check_modifiable(ctx, key, join(path, "header.key"))
    value = hdr.raw_value.decode("utf-8", "replace") if hdr.raw_value else hdr.value
    action = _APPEND_ACTIONS.get(int(msg.append_action))
    if action is None:
        ctx.fail(join(path, "append_action"), f"unknown append_action {msg.append_action}")
    if msg.HasField("append"):
        if msg.append_action != 0:
            ctx.fail(
                join(path, "append"),
                "both append and append_action are set; use only append_action",
            )
        action = "APPEND_IF_EXISTS_OR_ADD" if msg.append.value else "OVERWRITE_IF_EXISTS_OR_ADD"
    ctx.check(hdr, join(path, "header"))
    ctx.check(msg, path)
    return HeaderValueOption(key.lower(), value, action, bool(msg.keep_empty_value))


def header_ops(ctx: Ctx, msg: Any, path: str) -> HeaderOps:
    """The four request/response header add/remove lists of ``msg`` at one level."""
    out: dict[str, Any] = {}
    for kind in ("request", "response"):
        adds = tuple(
            header_value_option(ctx, h, join(path, f"{kind}_headers_to_add[{i}]"))
            for i, h in enumerate(getattr(msg, f"{kind}_headers_to_add"))
        )
        removes = []
        for i, name in enumerate(getattr(msg, f"{kind}_headers_to_remove")):
            _check_modifiable(ctx, name, join(path, f"{kind}_headers_to_remove[{i}]"))
            removes.append(name.lower())
        out[f"{kind}_headers_to_add"] = adds
        out[f"{kind}_headers_to_remove"] = tuple(removes)
    ops = HeaderOps(**out)
    # One shared empty value: most levels edit no headers (three per service otherwise).
    return NO_HEADER_OPS if ops.empty else ops


HEADER_OP_FIELDS = (
    "request_headers_to_add",
    "request_headers_to_remove",
    "response_headers_to_add",
    "response_headers_to_remove",
)


def check_config_source(ctx: Ctx, msg: Any, path: str) -> None:
    """Apply the field table to a ConfigSource and its ads / self part."""
    ctx.check(msg, path)
    which = msg.WhichOneof("config_source_specifier")
    if which in ("ads", "self"):
        ctx.check(getattr(msg, which), join(path, which))


def config_source_is_ads_or_self(msg: Any) -> bool:
    """gRPC accepts only ``ads`` or ``self`` config sources for RDS and EDS."""
    return msg.WhichOneof("config_source_specifier") in ("ads", "self")


def is_set(msg: Any, field: str) -> bool:
    """Whether ``field`` of ``msg`` is set: present message, non-empty list, non-default scalar."""
    fd = msg.DESCRIPTOR.fields_by_name[field]
    if fd.is_repeated:
        return len(getattr(msg, field)) > 0
    if fd.message_type is not None:
        return bool(msg.HasField(field))
    return bool(getattr(msg, field))
