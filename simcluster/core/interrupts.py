"""An interrupt a library turned into an error of its own, given back as the interrupt.

pydantic calls a field's serializer (every quantity with a unit has one: ``units._quantity``'s ``exact_text``) inside
``model_dump`` and wraps whatever it raises, the CLI's ``Interrupted`` or a KeyboardInterrupt too, as a
``PydanticSerializationError`` (a ValueError); a validator that dumps a preset (``cluster.gpu: h100-sxm``) turns that
into a validation error, and a caller keeping going after a failed run took Ctrl-C for that run's failure (round 38:
a sweep cached the point as failed and ran the rest; ``validate`` and ``run --report`` lost the work they had
finished). The CLI, while a command runs, says here how to raise the signal it received (``raising``); code
calling a library that wraps asks ``raise_received`` before it treats the library's error as an error."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

# How to raise the interrupt the running command received (nothing when none came); None between commands and
# outside a command (a library user; a script run through ``core.script_entry`` registers its own record).
_raise: Callable[[], None] | None = None


@contextlib.contextmanager
def raising(raise_received: Callable[[], None]) -> Iterator[None]:
    """While a command runs: ``raise_received()`` raises the interrupt it received, if any, and returns otherwise."""
    global _raise
    previous, _raise = _raise, raise_received
    try:
        yield
    finally:
        _raise = previous


def raise_received(err: BaseException | None = None) -> None:
    """Raise the interrupt the running command received (``Interrupted``), if one came; outside a command, an
    interrupt (a KeyboardInterrupt: any BaseException that is no Exception) the library kept as ``err``'s cause
    (pydantic keeps it for a field's own serializer; through a wrap serializer only if that passes it on, as
    ``spec.base.serialized`` does). Else return, and the caller goes on with the error it caught."""
    if _raise is not None:
        _raise()
        return
    seen = set()
    cause = err.__cause__ if err is not None else None
    while cause is not None and id(cause) not in seen:
        if not isinstance(cause, Exception):
            raise cause
        seen.add(id(cause))
        cause = cause.__cause__
