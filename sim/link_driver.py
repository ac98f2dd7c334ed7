"""Replay a host's conversation with a board on the RTL's UART pins, on the compiled harness.

The real host code (:mod:`host.link`, :mod:`host.accel`) runs first against the golden device
(:class:`golden.protocol.BridgeModel` over a golden backend), through a
:class:`RecordingTransport` that notes every request the host wrote and the reply bytes the
golden device gave. The requests then go to the RTL's ``rx`` pin as a transaction script, each
one after the previous reply has fully arrived on ``tx`` (the bridge does not buffer a whole
frame while it answers one), and every byte the RTL sends must equal golden's, in order.
Python runs once for the whole conversation; where the host must react to what the RTL says
(lost bytes, retries), the cocotb benches of ``sim/tb/link_tb.py`` do it per cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bitmod.host.link import LoopbackTransport

from .harness import Script, run_script

__all__ = ["Exchange", "RecordingTransport", "replay"]


@dataclass
class Exchange:
    """What a host wrote and what the golden device answered, write by write."""

    requests: list[bytes] = field(default_factory=list)
    replies: list[bytes] = field(default_factory=list)


class RecordingTransport(LoopbackTransport):
    """A :class:`host.link.LoopbackTransport` to a golden device that records the exchange
    (no faults: the replay expects the RTL to answer exactly as golden did)."""

    def __init__(self, device):
        super().__init__(device)
        self.exchange = Exchange()

    def write(self, data: bytes) -> None:
        before = len(self._pending)
        super().write(data)
        self.exchange.requests.append(bytes(data))
        self.exchange.replies.append(bytes(self._pending[before:]))

    def read(self, n: int, timeout: float) -> bytes:
        if len(self._pending) < n and hasattr(self.device, "timeout"):
            raise AssertionError("the host waited for bytes the golden device never sent: "
                                 "a recorded conversation must need no timeout")
        return super().read(n, timeout)


def replay(model, exchange: Exchange, *, timeout_cycles: int, reset_cycles: int = 2):
    """Run ``exchange``'s requests on ``model`` (a harness model built with a UART divisor);
    returns ``(rtl_replies, run)``: the RTL's reply bytes cut as golden's were, and the
    :class:`sim.harness.HarnessRun`."""
    if not model.ports.uart_divisor:
        raise ValueError(f"{model.name} has no UART pins (build it with uart_divisor)")
    script = Script().reset(reset_cycles)
    tx = len(model.ports.outputs)  # the UART transmit pin is the last output
    received = 0
    for request, reply in zip(exchange.requests, exchange.replies, strict=True):
        received += len(reply)
        script.uart(request).wait(tx, received)
    run = run_script(model, script, timeout_cycles=timeout_cycles)
    data = bytes(run.values("tx"))
    replies, pos = [], 0
    for reply in exchange.replies:
        replies.append(data[pos:pos + len(reply)])
        pos += len(reply)
    return replies, run
