"""The only place protobuf is parsed: xDS resources → frozen, validated dataclasses.

Each ``parse_*`` function takes a protobuf message (or an ``Any``) and returns a
dataclass or raises :class:`pymesh.errors.ResourceInvalid` naming the field.
"""
