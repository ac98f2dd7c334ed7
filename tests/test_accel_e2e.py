"""The whole accelerator end to end: :class:`fpga.top.AcceleratorTop` under cocotb + Verilator,
driven through its UART pins by the real host code (host/accel.py over host/link.py); output
codes bit-exact against golden/gemm.py before and after a fuzz phase. Also the host driver's
grouping of commands into WRITE runs and its bus map against fpga/top.py."""

import os
import tempfile
from pathlib import Path

import numpy as np

from bitmod.fpga import top
from bitmod.golden import core as gcore
from bitmod.golden import protocol
from bitmod.golden.quantize import get_scheme
from bitmod.host import accel
from bitmod.host.link import HostLink, LoopbackTransport
from bitmod.sim.verilator import get_model, run_cocotb

BITMOD4 = get_scheme("bitmod4").formats

CORE = gcore.CoreConfig(rows=1, cols=1, lanes=4, group_size=16, formats=BITMOD4,
                        act_format="int8", max_m=3, max_n=3, max_k=32)
# 4 clocks per UART bit; the receive timeout is 10 byte times.
LINK = protocol.LinkConfig(clk_freq=4_000_000, baud=1_000_000, max_payload=128,
                           timeout_cycles=400)


def test_group_runs():
    cmds = [("write_weight", 4, 1), ("write_weight", 5, 2), ("write_weight", 6, 3),
            ("write_weight", 8, 4), ("write_meta", 9, 5), ("write_meta", 10, 6),
            ("write_act", 0, 7), ("write_act", 1, 8), ("write_act", 2, 9)]
    assert accel.group_runs(cmds, 2) == [
        ("write_weight", 4, [1, 2]), ("write_weight", 6, [3]), ("write_weight", 8, [4]),
        ("write_meta", 9, [5, 6]), ("write_act", 0, [7, 8]), ("write_act", 2, [9])]
    # Every command is sent once, at its own address, whatever the run limit.
    for limit in (1, 3, 100):
        flat = [(op, a + i, w) for op, a, words in accel.group_runs(cmds, limit)
                for i, w in enumerate(words)]
        assert flat == cmds


def test_accelerator_driver_on_golden_models():
    """host/accel.py over the golden bridge and core models: exact codes and counters, the
    WRITE frame count of the grouping, and a refused command raised as AcceleratorError."""
    from bitmod.sim.tb.accel_tb import make_job

    mp = CORE
    backend = gcore.CoreBusModel(mp)
    link = HostLink(LoopbackTransport(protocol.BridgeModel(backend, LINK.max_payload)))
    dev = accel.Accelerator(link, CORE)
    checked = 0
    for seed, (m, n, k) in enumerate([(3, 3, 20), (2, 3, 32), (1, 1, 1)]):
        x, qt = make_job(CORE, m, n, k, seed)
        frames = dev.frames
        result = dev.gemm(x, qt)
        check = accel.compare_with_golden(CORE, x, qt, result)
        assert check["exact"] and check["counters_exact"]
        assert result["codes"].dtype == np.uint32 and result["codes"].shape == (m, n)
        cmds = gcore.load_commands(mp, x, qt) + gcore.run_commands(m, n, k)[:3]
        runs = accel.group_runs(cmds, LINK.max_payload // 4 - 1)
        assert dev.frames - frames == len(runs) <= len(cmds)
        # A channel's or a row's K words share a frame: far fewer frames than words.
        assert k < 20 or len(runs) < len(cmds) // 8
        # A wrong code is seen.
        result["codes"][0, 0] ^= 1
        assert accel.compare_with_golden(CORE, x, qt, result)["mismatches"] == 1
        checked += check["cases"]
    try:
        dev.run(mp.max_m + 1, 1, 1)
    except accel.AcceleratorError as error:
        assert error.op == "set_job" and error.addr == 0
    else:
        raise AssertionError("set_job beyond max_m was accepted")
    print(f"checked {checked} codes")


def test_e2e_gemm_fuzz_gemm():
    model = get_model(top.AcceleratorTop, {"core": CORE, "link": LINK}, engine="cocotb")
    with tempfile.TemporaryDirectory(dir=model.build_dir) as scratch:
        report = Path(scratch) / "report.txt"
        run_cocotb(model, "bitmod.sim.tb.accel_tb", testcase="gemm_fuzz_gemm",
                   run_name=f"accel-{os.getpid()}-{Path(scratch).name}",
                   env={"ACCEL_REPORT": str(report), "ACCEL_DIMS": "3x3x20,2x3x32",
                        "ACCEL_FUZZ_ITEMS": "40", "ACCEL_SEED": "5"})
        text = report.read_text()
    print(text)
    assert text.count("bit-exact") == 2 and "fuzz items" in text


def test_compiled_harness_replays_a_gemm_on_the_uart_pins():
    """The real host driver's whole conversation for two GEMMs (recorded against the golden
    bridge and core models) replayed on the accelerator top's rx pin by the compiled harness:
    every reply byte on tx equals golden's."""
    from bitmod.sim.link_driver import RecordingTransport, replay
    from bitmod.sim.tb.accel_tb import make_job

    transport = RecordingTransport(protocol.BridgeModel(gcore.CoreBusModel(CORE),
                                                        LINK.max_payload))
    dev = accel.Accelerator(HostLink(transport), CORE)
    for seed, (m, n, k) in enumerate([(3, 3, 20), (2, 3, 32)]):
        x, qt = make_job(CORE, m, n, k, seed)
        assert accel.compare_with_golden(CORE, x, qt, dev.gemm(x, qt))["exact"]
    exchange = transport.exchange
    model = get_model(top.AcceleratorTop, {"core": CORE, "link": LINK},
                      uart_divisor=LINK.divisor)
    replies, run = replay(model, exchange, timeout_cycles=2_000_000)
    assert run.framing_errors == 0
    assert replies == exchange.replies
    sent = sum(map(len, exchange.requests))
    print(f"{len(exchange.requests)} frames, {sent} bytes in, "
          f"{sum(map(len, replies))} bytes out, bit-exact; {run.cycles} cycles in "
          f"{run.seconds:.2f} s")
