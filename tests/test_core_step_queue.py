"""The controller's step queue (hdl/array/step_queue.py) beside a two-entry deque: random
offers and random readiness for 3,000 cycles; every entry comes out once, in order, from the
cycle after its push; ``i_stream.ready`` is ``len(model) != 2`` and ``o_stream.valid``
``len(model) != 0`` in every cycle, and neither changes when ``o_stream.ready`` changes in the
same cycle (both start at flip-flops)."""

import random
from collections import deque

import pytest
from amaranth.lib import data

from bitmod.hdl.array.step_queue import StepQueue
from bitmod.sim.amaranth_sim import run_simulation


@pytest.mark.parametrize("ready_register", [False, True])
@pytest.mark.parametrize("shape", [12, data.StructLayout({"addr": 7, "last": 1, "mask": 4})])
def test_step_queue_keeps_order_and_flags(shape, ready_register):
    queue = StepQueue(shape, ready_register=ready_register)
    width = 12
    rng = random.Random(3)
    model = deque()
    received, pushed = [], []

    async def bench(ctx):
        for cycle in range(3000):
            offer = rng.random() < 0.7
            value = rng.randrange(1 << width)
            ctx.set(queue.i_stream.valid, offer)
            ctx.set(queue.i_stream.payload, value if isinstance(shape, int)
                    else {"addr": value & 127, "last": value >> 7 & 1, "mask": value >> 8})
            flags = []
            for ready in (0, 1, rng.random() < 0.6):  # the last one stands this cycle
                ctx.set(queue.o_stream.ready, ready)
                flags.append((ctx.get(queue.i_stream.ready), ctx.get(queue.o_stream.valid)))
            assert len(set(flags)) == 1, f"cycle {cycle}: ready or valid follows o_stream.ready"
            in_ready, out_valid = flags[0]
            assert in_ready == (len(model) != 2) and out_valid == (len(model) != 0), cycle
            if out_valid and ready:
                payload = ctx.get(queue.o_stream.payload)
                got = payload if isinstance(shape, int) else (
                    payload.addr | payload.last << 7 | payload.mask << 8)
                assert got == model.popleft(), cycle
                received.append(got)
            if offer and in_ready:
                model.append(value)
                pushed.append(value)
            await ctx.tick()

    run_simulation(queue, [bench], deadline=1e-3)
    assert received == pushed[:len(received)] and len(received) > 1500


def test_step_queue_shape_is_validated():
    with pytest.raises(TypeError, match="shape must be a shape-castable, not 'wide'"):
        StepQueue("wide")
    with pytest.raises(TypeError, match="ready_register must be a bool, not 1"):
        StepQueue(12, ready_register=1)


def test_step_queue_head_loads_do_not_follow_the_sender_valid():
    """An empty head takes the input whether or not it is pushed (its enable starts at the
    chunks' count flags and ``o_stream.ready``, never at ``i_stream.valid``), and a held head
    keeps its entry while the receiver waits; every 32-bit chunk of a 70-bit head alike."""
    queue = StepQueue(70)
    words = [(0x15 << 64) | 0x0123_4567_89AB_CDEF, (0x2A << 64) | 0x0FED_CBA9_8765_4321,
             (0x3F << 64) | 0x5555_AAAA_5555_AAAA]

    async def bench(ctx):
        ctx.set(queue.o_stream.ready, 0)
        ctx.set(queue.i_stream.valid, 0)
        ctx.set(queue.i_stream.payload, words[0])
        await ctx.tick()
        assert ctx.get(queue.o_stream.payload) == words[0]  # loaded, not pushed
        assert not ctx.get(queue.o_stream.valid)
        ctx.set(queue.i_stream.valid, 1)
        ctx.set(queue.i_stream.payload, words[1])
        await ctx.tick()  # pushed: the head holds it
        ctx.set(queue.i_stream.valid, 0)
        ctx.set(queue.i_stream.payload, words[2])
        for _ in range(3):
            await ctx.tick()
            assert ctx.get(queue.o_stream.valid)
            assert ctx.get(queue.o_stream.payload) == words[1]

    run_simulation(queue, [bench], deadline=1e-3)
