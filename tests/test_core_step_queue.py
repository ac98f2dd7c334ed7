"""The controller's step queue (hdl/array/step_queue.py) beside a two-entry deque: random
offers and random readiness for 3,000 cycles; every entry comes out once, in order, from the
cycle after its push; ``i_stream.ready`` is ``len(model) != 2`` and ``o_stream.valid``
``len(model) != 0`` in every cycle, and neither changes when ``o_stream.ready`` changes in the
same cycle (both start at flip-flops). With copies of a field, every copy equals the head's
field in every cycle."""

import random
from collections import deque

import pytest
from amaranth.lib import data

from bitmod.hdl.array.step_queue import StepQueue
from bitmod.sim.amaranth_sim import run_simulation

LAYOUT = data.StructLayout({"addr": 7, "last": 1, "mask": 4})


@pytest.mark.parametrize(("shape", "copies"), [(12, ()), (LAYOUT, ()),
                                               (LAYOUT, (("addr", 3), ("mask", 1)))])
def test_step_queue_keeps_order_and_flags(shape, copies):
    queue = StepQueue(shape, copies)
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
            if copies and out_valid:
                head = ctx.get(queue.o_stream.payload)
                held = ctx.get(queue.head_copies)
                for field, count in copies:
                    assert [int(v) for v in held[field]] == [int(head[field])] * count, cycle
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
    with pytest.raises(ValueError, match=r"copies must be \(field, count >= 1\) pairs, not "
                                         r"\('addr', 0\)"):
        StepQueue(LAYOUT, (("addr", 0),))
    with pytest.raises(ValueError, match="copies names 'data', not a field of"):
        StepQueue(LAYOUT, (("data", 2),))
    with pytest.raises(ValueError, match="copies names 'addr', not a field of 12"):
        StepQueue(12, (("addr", 2),))
