"""The base of every model of a scenario: pydantic's ``BaseModel`` whose dump gives back an interrupt.

pydantic wraps whatever a serializer raises as a ``PydanticSerializationError``, an interrupt too (Ctrl-C lands in a
serializer easily: every quantity with a unit is written by ``units.exact_text``, which parses its candidates back).
A dump of one of these models that fails while the command was interrupted raises the interrupt instead
(``core.interrupts``), so that the command stops there and keeps what it finished, as for an interrupt anywhere else;
inside a validator (a GPU or NIC preset's dump) the interrupt passes through pydantic's validation as it is."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticSerializationError

from simcluster.core import interrupts


class Spec(BaseModel):
    """``BaseModel`` whose ``model_dump`` gives back an interrupt pydantic wrapped (simcluster dumps no model to JSON
    text: ``model_dump_json`` is pydantic's)."""

    def model_dump(self, **kwargs: Any) -> dict[str, Any]:
        try:
            return super().model_dump(**kwargs)
        except PydanticSerializationError as err:
            interrupts.raise_received(err)
            raise


def serialized(handler: Any, value: Any) -> Any:
    """``handler(value)`` inside a model's wrap serializer (``model_serializer(mode="wrap")``), an interrupt pydantic
    wrapped given back: the error reaching the wrap serializer still has the interrupt as its cause, but pydantic drops
    it when the error leaves the wrap serializer, so that ``Spec.model_dump`` could not tell outside a command."""
    try:
        return handler(value)
    except PydanticSerializationError as err:
        interrupts.raise_received(err)
        raise
