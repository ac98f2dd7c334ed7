"""The verification infrastructure checked on a reference unit (hdl.selftest.PipelinedAdder)."""

import numpy as np
import pytest

from bitmod.hdl.selftest import PipelinedAdder
from bitmod.sim.amaranth_sim import run_simulation, stream_get, stream_put
from bitmod.sim.scoreboard import check
from bitmod.sim.vectors import pack_fields, run_stream, run_vectors, unpack_fields
from bitmod.sim.verilator import SimulationFailed


def adder_reference(a, b):
    return np.asarray(a, dtype=np.int64) + np.asarray(b, dtype=np.int64)


def all_operand_pairs(width):
    values = np.arange(-(1 << (width - 1)), 1 << (width - 1))
    a, b = np.meshgrid(values, values, indexing="ij")
    return a.reshape(-1), b.reshape(-1)


def test_pack_unpack_round_trip():
    layout = PipelinedAdder(8).operands
    a, b = all_operand_pairs(8)
    fields = unpack_fields(layout, pack_fields(layout, a=a, b=b))
    assert (fields["a"] == a).all() and (fields["b"] == b).all()


def test_pack_rejects_values_that_do_not_fit():
    layout = PipelinedAdder(4).operands
    with pytest.raises(ValueError, match="'a'"):
        pack_fields(layout, a=[8], b=[0])
    with pytest.raises(ValueError, match="missing"):
        pack_fields(layout, a=[1])


def test_amaranth_sim_helpers():
    dut = PipelinedAdder(width=4, stages=3)
    a, b = all_operand_pairs(4)
    received = []

    async def producer(ctx):
        for x, y in zip(a, b, strict=True):
            await stream_put(ctx, dut.i_stream, {"a": int(x), "b": int(y)})

    async def consumer(ctx):
        for _ in range(len(a)):
            received.append(await stream_get(ctx, dut.o_stream))

    run_simulation(dut, [producer, consumer], deadline=1e-3)
    assert received == list(adder_reference(a, b))


def test_run_vectors_exhaustive_8bit():
    params = {"width": 8, "stages": 2}
    layout = PipelinedAdder(**params).operands
    a, b = all_operand_pairs(8)
    stats = {}
    inputs = pack_fields(layout, a=a, b=b)
    out = run_vectors(PipelinedAdder, params, inputs, stats=stats)
    rtl = np.array([v - (1 << 9) if v >> 8 else v for v in out])
    assert check(rtl, adder_reference(a, b), name="8-bit adder", inputs=inputs) == 65536
    assert stats["fill_cycles"] == PipelinedAdder(**params).latency


def test_run_stream_with_backpressure():
    params = {"width": 8, "stages": 3}
    layout = PipelinedAdder(**params).operands
    rng = np.random.default_rng(5)
    a, b = rng.integers(-128, 128, 3000), rng.integers(-128, 128, 3000)
    out = run_stream(PipelinedAdder, params, pack_fields(layout, a=a, b=b),
                     backpressure=0.4, idle=0.3, seed=7)
    rtl = np.array([v - (1 << 9) if v >> 8 else v for v in out])
    assert (rtl == adder_reference(a, b)).all()


def test_run_vectors_catches_a_unit_below_full_rate():
    params = {"width": 4, "stages": 1, "every_other": True}
    layout = PipelinedAdder(**params).operands
    a, b = all_operand_pairs(4)
    with pytest.raises(SimulationFailed):
        run_vectors(PipelinedAdder, params, pack_fields(layout, a=a, b=b))


def test_run_stream_reports_output_cycles():
    params = {"width": 8, "stages": 3}
    layout = PipelinedAdder(**params).operands
    a = np.arange(-50, 50)
    stats = {}
    out = run_stream(PipelinedAdder, params, pack_fields(layout, a=a, b=a), backpressure=0.0,
                     idle=0.0, stats=stats)
    assert len(out) == len(a)
    latency = PipelinedAdder(**params).latency
    assert stats["output_cycles"] == [latency + i for i in range(len(a))]


@pytest.mark.parametrize(("idle", "backpressure", "seed"), [(0.0, 0.0, 1), (0.3, 0.4, 9)])
def test_engines_give_identical_transactions_and_stamps(idle, backpressure, seed):
    """The same script on the compiled harness, on cocotb and in Amaranth's simulator: the
    same outputs, the same cycle of every output, the same number of cycles."""
    params = {"width": 6, "stages": 2}
    layout = PipelinedAdder(**params).operands
    rng = np.random.default_rng(seed)
    inputs = pack_fields(layout, a=rng.integers(-32, 32, 200), b=rng.integers(-32, 32, 200))
    runs = {}
    for engine in ("harness", "cocotb", "amaranth"):
        stats = {}
        runs[engine] = (list(run_stream(PipelinedAdder, params, inputs, idle=idle,
                                        backpressure=backpressure, seed=seed, stats=stats,
                                        engine=engine)), stats["output_cycles"], stats["cycles"])
    assert runs["harness"] == runs["cocotb"] == runs["amaranth"]
    # The noise was real: with idles and backpressure the outputs are not back to back.
    stamps = runs["harness"][1]
    assert (stamps[-1] - stamps[0] > len(stamps)) == bool(idle or backpressure)


def test_harness_writes_waves_of_the_same_run(tmp_path):
    """``waves=path``: a model built with tracing writes a VCD of the run (the DUT's signals,
    two time steps per cycle) and gives the transactions and stamps of the untraced model."""
    params = {"width": 6, "stages": 2}
    layout = PipelinedAdder(**params).operands
    a = np.arange(-20, 20)
    inputs = pack_fields(layout, a=a, b=a[::-1])
    runs = []
    for waves in (None, tmp_path / "adder.vcd"):
        stats = {}
        out = run_stream(PipelinedAdder, params, inputs, backpressure=0.3, seed=4, stats=stats,
                         waves=waves)
        runs.append((list(out), stats["output_cycles"], stats["cycles"], stats["model"]))
    assert runs[0][:3] == runs[1][:3] and runs[0][3] != runs[1][3]  # two models, one result
    vcd = (tmp_path / "adder.vcd").read_text()
    assert "$enddefinitions" in vcd and "$scope module dut $end" in vcd
    assert "o_stream__valid" in vcd
    times = [int(line[1:]) for line in vcd.splitlines() if line.startswith("#")]
    assert max(times) == 2 * runs[1][2]


def test_harness_refuses_bad_scripts_and_times_out():
    from bitmod.sim.harness import Script, run_script
    from bitmod.sim.verilator import get_model

    model = get_model(PipelinedAdder, {"width": 4, "stages": 1})
    with pytest.raises(SimulationFailed, match="wider than 8 bits"):
        run_script(model, Script().put(0, [1 << 9]).wait(0, 1), timeout_cycles=100)
    with pytest.raises(SimulationFailed, match="timeout: no progress after 50 cycles"):
        run_script(model, Script().reset(2).put(0, [1]).wait(0, 2), timeout_cycles=50)
    with pytest.raises(ValueError, match="idle must be in"):
        run_script(model, Script(), idle=1.0, timeout_cycles=10)
    # The harness's own parser: one line naming the problem for a malformed script.
    malformed = [(["put x 1"], "put: bad number x"), (["put 0"], "put: missing payload"),
                 (["put 3 1"], "no input stream 3"), (["frob 1"], "unknown directive frob"),
                 (["put 0 1g"], "bad hex digit in 1g"), (["wait 0"], "wait: missing number"),
                 (["set nope 1"], "no static port nope")]
    for lines, message in malformed:
        with pytest.raises(SimulationFailed, match=message):
            run_script(model, Script(lines=lines), timeout_cycles=100)


def test_scoreboard_reports_mismatches():
    assert check([1, 2, 3], [1, 2, 3]) == 3
    with pytest.raises(AssertionError, match=r"1 of 3 cases differ\n  case 1: input 0x11 rtl 5"):
        check([1, 5, 3], [1, 2, 3], inputs=[0x10, 0x11, 0x12])
    with pytest.raises(AssertionError, match="shape"):
        check([1, 2], [1, 2, 3])
    wide = 1 << 80
    with pytest.raises(AssertionError, match="golden"):
        check(np.array([wide], dtype=object), np.array([wide + 1], dtype=object))
