"""Round 38: an interrupt that a library wraps as an error of its own is still an interrupt.

pydantic calls a field's serializer inside ``model_dump`` and wraps whatever it raises, a KeyboardInterrupt or the
CLI's ``Interrupted`` too, as a ``PydanticSerializationError`` (a ValueError). The scenario reader's GPU and NIC
presets call ``model_dump`` inside a validator, so Ctrl-C landing there became a validation error: ``error:
cluster.gpu: Error calling function `<lambda>`: KeyboardInterrupt`` and exit 2 where Ctrl-C exits 130 (CI's run of
round 37, ``test_ctrl_c_in_a_script_is_one_line_and_130_keeping_what_it_printed``). These tests land the signal
inside the serializer on purpose, so they do not depend on when a real Ctrl-C arrives."""

from __future__ import annotations

import signal
from typing import Annotated

import pytest
from pydantic import BaseModel, PlainSerializer
from pydantic_core import PydanticSerializationError

from simcluster import cli
from simcluster.core import script_entry
from simcluster.spec import config, hardware


def _signal_self(_value):
    signal.raise_signal(signal.SIGINT)
    return 0


class _Interrupting(BaseModel):
    """A model whose one field's serializer receives a SIGINT (as Ctrl-C arriving there would)."""

    x: Annotated[float, PlainSerializer(_signal_self)] = 1.0


def test_pydantic_wraps_an_interrupt_in_a_serializer():
    """The premise: Python's KeyboardInterrupt raised inside a serializer leaves ``model_dump`` as a ValueError."""
    with pytest.raises(PydanticSerializationError, match="KeyboardInterrupt"):
        _Interrupting().model_dump()


@pytest.fixture
def interrupting_gpu_preset(monkeypatch):
    """``hardware.gpu`` returning a preset whose dump receives a SIGINT: the reader's validator of ``cluster.gpu``
    calls it, as the real preset's dump is called."""
    real = hardware.gpu

    class Preset:
        def __init__(self, name):
            self.spec = real(name)

        def model_dump(self, **kwargs):
            _Interrupting().model_dump()
            return self.spec.model_dump(**kwargs)

    monkeypatch.setattr(hardware, "gpu", Preset)


def test_a_script_interrupted_inside_a_serializer_is_130(interrupting_gpu_preset, capsys):
    def main(_argv):
        config.load("dao2023-gpt3-1.3b-2k-8-a100")
        return 0

    assert script_entry.call(main, []) == script_entry.INTERRUPTED
    assert capsys.readouterr().err == "interrupted by SIGINT\n"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler   # the script's handler is put back


def test_a_script_error_without_an_interrupt_is_still_2(capsys):
    def main(_argv):
        config.load("dao2023-gpt3-1.3b-2k-8-a10")
        return 0

    assert script_entry.call(main, []) == script_entry.USAGE_ERROR
    assert "interrupted" not in capsys.readouterr().err


def test_the_cli_interrupted_inside_a_serializer_is_130(interrupting_gpu_preset, capsys):
    assert cli.main(["run", "dao2023-gpt3-1.3b-2k-8-a100"]) == 130
    assert capsys.readouterr().err == "interrupted by SIGINT\n"
