"""A split top's host writes (hdl/array/host_writes.py) beside golden.core.CoreModel: each
command committed (answered ``ok``) writes, one cycle later, exactly the bank, word and lane
the model stores it in, with the model's element; a command that is not a buffer write, or not
committed, writes nothing; the enables last one cycle."""

import numpy as np
import pytest

from bitmod.golden import core as gcore
from bitmod.golden.core import CoreConfig
from bitmod.hdl.array.buffers import HOST_WRITTEN
from bitmod.hdl.array.host_writes import HostWrites
from bitmod.sim.amaranth_sim import run_simulation

# Banks, lanes and depths not powers of two; zero points widen the meta word.
CONFIGS = {
    "int8": dict(rows=3, cols=5, lanes=4, group_size=8, act_format="int8", max_m=7, max_n=11,
                 max_k=22),
    "fp16 zp": dict(rows=2, cols=3, lanes=2, group_size=4, act_format="fp16", formats="int4",
                    zero_points=True, max_m=5, max_n=5, max_k=11),
}


def _commands(mp: CoreConfig, seed: int) -> list[tuple[int, int, int, bool]]:
    """``(op, addr, data, commit)``: the writes of every bank through golden's address map
    (valid data), each op's other commands, and writes not committed."""
    rng = np.random.default_rng(seed)
    cmds = []
    for n in range(mp.max_n):
        k = int(rng.integers(mp.max_k))
        cmds.append((gcore.OPS["write_weight"], mp.weight_address(n, k),
                     int(rng.integers(1 << mp.code_bits)), True))
        SB = mp.array.scale_bits  # meta: scale | selector << SB | zero point << SB + 2
        zp = int(rng.integers(1 << mp.code_bits)) if mp.array.zero_points else 0
        meta = (int(rng.integers(1 << SB)) | int(rng.integers(len(mp.array.formats))) << SB
                | zp << SB + 2)
        cmds.append((gcore.OPS["write_meta"], mp.meta_address(n, int(rng.integers(
            mp.max_groups))), meta, True))
    for m in range(mp.max_m):
        k = int(rng.integers(mp.max_k))
        cmds.append((gcore.OPS["write_act"], mp.act_address(m, k), int(rng.integers(1 << 7)),
                     True))
    for op in range(1 << gcore.OP_BITS):  # every op, the writes among them not committed
        addr = int(rng.integers(1 << mp.addr_bits))
        cmds.append((op, addr, int(rng.integers(1 << 7)), False))
        if op not in (gcore.OPS[f"write_{name}"] for name in HOST_WRITTEN):
            cmds.append((op, addr, int(rng.integers(1 << 7)), True))
    order = rng.permutation(len(cmds))
    return [cmds[i] for i in order]


def _expected(mp: CoreConfig, op: int, addr: int, data: int, commit: bool) -> dict:
    """``{(buffer, bank): (word, element, lane enables)}`` golden's model stores for the
    command (nothing for other ops or without ``commit``)."""
    if not commit:
        return {}
    model = gcore.CoreModel(mp)
    status, _ = model.command(op, addr, data)
    assert status == gcore.STATUS["ok"] or op not in (gcore.OPS[f"write_{n}"]
                                                      for n in HOST_WRITTEN)
    out = {}
    for (bank, word, lane), element in model.weights.items():
        out["weight", bank] = (word, element, 1 << lane)
    for (bank, word), element in model.meta.items():
        out["meta", bank] = (word, element, 1)
    for (bank, word, lane), element in model.acts.items():
        out["act", bank] = (word, element & ((1 << mp.act_bits) - 1), 1 << lane)
    return out


@pytest.mark.parametrize("name", list(CONFIGS))
def test_host_writes_store_what_the_model_stores(name):
    mp = CoreConfig(**CONFIGS[name])
    dut = HostWrites(mp)
    cmds = _commands(mp, seed=3)
    ports = {(buf, bank): port for buf in HOST_WRITTEN
             for bank, port in enumerate(getattr(dut, f"{buf}_write"))}
    seen = []

    async def bench(ctx):
        for op, addr, data, commit in cmds:
            ctx.set(dut.cmd, {"op": op, "addr": addr, "data": data})
            ctx.set(dut.commit, commit)
            await ctx.tick()
            ctx.set(dut.commit, 0)
            writes = {key: (ctx.get(p.addr), ctx.get(p.data), ctx.get(p.en))
                      for key, p in ports.items() if ctx.get(p.en)}
            await ctx.tick()
            assert not any(ctx.get(p.en) for p in ports.values())  # one cycle only
            seen.append(writes)

    run_simulation(dut, [bench], deadline=1e-4)
    writes = 0
    for (op, addr, data, commit), got in zip(cmds, seen, strict=True):
        want = _expected(mp, op, addr, data, commit)
        assert got == want, (op, addr, data, commit)
        writes += len(want)
    assert writes == 2 * mp.max_n + mp.max_m


def test_host_writes_parameters_are_validated():
    with pytest.raises(TypeError, match="config must be a CoreConfig, not 3"):
        HostWrites(3)
