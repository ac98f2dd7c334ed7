"""The whole accelerator end to end: :class:`fpga.top.AcceleratorTop` under cocotb + Verilator,
driven through its UART pins by the real host code (host/accel.py over host/link.py); output
codes bit-exact against golden/gemm.py before and after a fuzz phase. Also the host driver's
grouping of commands into WRITE runs and its bus map against fpga/top.py, and the device
configuration block (golden encoder/decoder, the RTL's words, the host refusing a mismatch)."""

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from bitmod.fpga import top
from bitmod.golden import core as gcore
from bitmod.golden import protocol
from bitmod.golden.gemm import scheme_formats
from bitmod.golden.quantize import get_scheme
from bitmod.host import accel
from bitmod.host.link import HostLink, LinkTimeout, LoopbackTransport
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
    backend = gcore.CoreBusModel(mp, LINK)
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


# The bridge in a clock domain of its own (fpga.top.AcceleratorTop): slower than the core, as
# on the ECP5 boards (2.5 core cycles per link cycle), and faster (half a core cycle).
SPLIT_LINKS = [dataclasses.replace(LINK, core_clk_freq=f) for f in (10_000_000, 2_000_000)]


@pytest.mark.parametrize("link", [LINK, *SPLIT_LINKS],
                         ids=["one clock", "link slower", "link faster"])
def test_e2e_gemm_fuzz_gemm(link):
    model = get_model(top.AcceleratorTop, {"core": CORE, "link": link}, engine="cocotb")
    with tempfile.TemporaryDirectory(dir=model.build_dir) as scratch:
        report = Path(scratch) / "report.txt"
        run_cocotb(model, "bitmod.sim.tb.accel_tb", testcase="gemm_fuzz_gemm",
                   run_name=f"accel-{os.getpid()}-{Path(scratch).name}",
                   env={"ACCEL_REPORT": str(report), "ACCEL_DIMS": "3x3x20,2x3x32",
                        "ACCEL_FUZZ_ITEMS": "40", "ACCEL_SEED": "5"})
        text = report.read_text()
    print(text)
    assert text.count("bit-exact") == 2 and "fuzz items" in text


def test_compiled_harness_refuses_a_split_top():
    """The compiled harness drives one clock: a top with a link domain is refused in one line
    (the cocotb runs above drive both clocks)."""
    with pytest.raises(ValueError, match=r"domains besides sync \(link\).*engine='cocotb'"):
        get_model(top.AcceleratorTop, {"core": CORE, "link": SPLIT_LINKS[0]},
                  uart_divisor=LINK.divisor)


def test_compiled_harness_replays_a_gemm_on_the_uart_pins():
    """The real host driver's whole conversation for two GEMMs (recorded against the golden
    bridge and core models) replayed on the accelerator top's rx pin by the compiled harness:
    every reply byte on tx equals golden's."""
    from bitmod.sim.link_driver import RecordingTransport, replay
    from bitmod.sim.tb.accel_tb import make_job

    transport = RecordingTransport(protocol.BridgeModel(gcore.CoreBusModel(CORE, LINK),
                                                        LINK.max_payload))
    dev = accel.Accelerator(HostLink(transport), CORE)
    for seed, (m, n, k) in enumerate([(3, 3, 20), (2, 3, 32)]):
        x, qt = make_job(CORE, m, n, k, seed)
        assert accel.compare_with_golden(CORE, x, qt, dev.gemm(x, qt))["exact"]
    exchange = transport.exchange
    # Before its first command the driver reads the configuration block (after a STATUS for
    # max_payload): the RTL must answer it as golden did, with the encoder's words.
    requests = [protocol.decode_frame(r) for r in exchange.requests]
    assert [f.cmd for f in requests[:2]] == [protocol.Cmd.STATUS, protocol.Cmd.READ]
    assert requests[1].payload[:4] == gcore.bus_address("read_config").to_bytes(4, "little")
    block = protocol.decode_frame(exchange.replies[1]).payload
    words = [int.from_bytes(block[i:i + 4], "little") for i in range(0, len(block), 4)]
    assert words == list(gcore.encode_config(CORE, LINK))
    model = get_model(top.AcceleratorTop, {"core": CORE, "link": LINK},
                      uart_divisor=LINK.divisor)
    replies, run = replay(model, exchange, timeout_cycles=2_000_000)
    assert run.framing_errors == 0
    assert replies == exchange.replies
    sent = sum(map(len, exchange.requests))
    print(f"{len(exchange.requests)} frames, {sent} bytes in, "
          f"{sum(map(len, replies))} bytes out, bit-exact; {run.cycles} cycles in "
          f"{run.seconds:.2f} s")


def test_compiled_harness_reset_mid_frame():
    """The accelerator top reset while a request is half received, and while a reply is half
    sent: afterwards each request is answered in full, exactly as a freshly reset golden bridge
    answers it (nothing of the cut frames survives; the harness run is cycle-bounded)."""
    from bitmod.sim.harness import Script, run_script

    model = get_model(top.AcceleratorTop, {"core": CORE, "link": LINK},
                      uart_divisor=LINK.divisor)
    tx = len(model.ports.outputs)

    def fresh():
        return protocol.BridgeModel(gcore.CoreBusModel(CORE, LINK), LINK.max_payload)

    config_read = protocol.read_request(1, gcore.bus_address("read_config"),
                                        gcore.CONFIG_WORDS)
    config_reply = fresh().feed(config_read)
    status_a, status_b = protocol.status_request(2), protocol.status_request(3)
    reply_a, reply_b = fresh().feed(status_a), fresh().feed(status_b)
    # Without the reset, the second request's bytes would complete the first one's payload
    # and the status request would be lost in an error reply.
    spoilt = protocol.decode_frame(fresh().feed(config_read[:7] + status_a))
    assert spoilt.cmd == protocol.Reply.ERROR
    cut = 5
    script = (Script().reset(2)
              .uart(config_read[:7]).reset(3).uart(status_a).wait(tx, len(reply_a))
              .uart(config_read).wait(tx, len(reply_a) + cut).reset(3)
              .uart(status_b).wait(tx, len(reply_a) + cut + len(reply_b)))
    run = run_script(model, script, timeout_cycles=100_000)
    data = bytes(run.values("tx"))
    assert run.framing_errors == 0
    assert data == reply_a + config_reply[:cut] + reply_b
    assert protocol.decode_status(protocol.decode_frame(reply_b).payload).ok_frames == 0
    print(f"{run.cycles} cycles: {len(data)} reply bytes as golden after two resets")


# --- the device configuration block ---------------------------------------------------------

CONFIGS = [
    (CORE, LINK),
    (gcore.CoreConfig(rows=2, cols=2, lanes=4, formats=BITMOD4, max_m=8, max_n=8, max_k=32),
     protocol.LinkConfig(clk_freq=16_875_000, baud=115_200)),
    (gcore.CoreConfig(rows=3, cols=5, lanes=8, group_size=32, formats=scheme_formats("int4"),
                      act_format="fp16", mant_width=10, rounding="trunc", act_exp_bits=2,
                      out_format="fp16", max_m=65536, max_n=7, max_k=64),
     protocol.LinkConfig(clk_freq=100e6, baud=3_000_000)),
    (gcore.CoreConfig(rows=2, cols=2, lanes=4, formats=scheme_formats("int4"), max_m=8,
                      max_n=8, max_k=32, pe_kind="int"),  # the int PE: word 11 says so
     protocol.LinkConfig(clk_freq=24e6, baud=115_200)),
    (gcore.CoreConfig(rows=2, cols=2, lanes=4, formats=scheme_formats("int4_asym", True),
                      max_m=8, max_n=8, max_k=32, zero_points=True),  # word 11, bit 8
     protocol.LinkConfig(clk_freq=24e6, baud=115_200)),
    (gcore.CoreConfig(rows=7, cols=6, lanes=16, group_size=128, formats=BITMOD4, max_m=64,
                      max_n=64, max_k=256, serializer_stages=3,  # word 11, bits 10..9
                      feed_stages=2),  # word 11, bits 12..11
     protocol.LinkConfig(clk_freq=100e6, baud=115_200)),
    (gcore.CoreConfig(rows=64, cols=1, lanes=1, group_size=1, formats=("fp4",),
                      act_format="bf16", max_m=1, max_n=1, max_k=1),
     protocol.LinkConfig(clk_freq=48e6, baud=9600)),
]


@pytest.mark.parametrize("index", range(len(CONFIGS)))
def test_config_block_round_trip(index):
    core, link = CONFIGS[index]
    words = gcore.encode_config(core, link)
    assert len(words) == gcore.CONFIG_WORDS and all(0 <= w < 1 << 32 for w in words)
    assert words[0] == gcore.CONFIG_MAGIC << 16 | gcore.CONFIG_VERSION << 8 | len(words)
    device = gcore.decode_config(words)
    assert device == gcore.DeviceConfig.of(core, link)
    assert device.core() == core
    assert (device.clock_hz, device.baud) == (round(link.clk_freq), link.baud)
    assert device.differences(gcore.DeviceConfig.of(core, link)) == []


def test_config_block_refuses_what_it_cannot_read():
    words = list(gcore.encode_config(CORE, LINK))
    with pytest.raises(ValueError, match="not a configuration block"):
        gcore.decode_config([gcore.STATUS["bad_op"], *words[1:]])
    with pytest.raises(ValueError, match="not a configuration block"):
        gcore.decode_config([])
    newer = [words[0] + (1 << 8), *words[1:]]
    with pytest.raises(ValueError, match="configuration block version 3; this host reads "
                                         "version 2"):
        gcore.decode_config(newer)
    with pytest.raises(ValueError, match="has 12 words, not 12 \\(read 11\\)"):
        gcore.decode_config(words[:-1])
    with pytest.raises(ValueError, match="PE kind code 7 is not one this host knows"):
        gcore.decode_config([*words[:-1], 7])
    # Weight formats no registered scheme or format has: known by CRC only.
    odd = gcore.CoreConfig(formats=("fp4_er_pos", "fp4_ea_neg"))
    device = gcore.decode_config(gcore.encode_config(odd, LINK))
    assert device.formats is None and device.schemes == ()
    with pytest.raises(ValueError, match="not those of any registered scheme"):
        device.core()
    assert "2 unknown format(s), CRC 0x" in device.describe()["weight formats"]
    wide = dataclasses.replace(gcore.DeviceConfig.of(CORE, LINK), rows=1 << 16)
    with pytest.raises(ValueError, match="rows = 65536 does not fit the 16 bits"):
        wide.words()


def _golden_board(core, link=LINK):
    """A host link to the golden bridge + bus model of a bitstream of ``core`` behind ``link``
    (``link`` None: a bitstream without a configuration block)."""
    bus = gcore.CoreBusModel(core, link)
    return HostLink(LoopbackTransport(protocol.BridgeModel(bus, LINK.max_payload))), bus


def test_host_refuses_a_mismatched_bitstream():
    """A 2x2 bitstream driven as a 4x4: one ConfigMismatch naming the array, before any
    command; lanes, formats and activation format named too; nothing was written."""
    from bitmod.sim.tb.accel_tb import make_job

    board = gcore.CoreConfig(rows=2, cols=2, lanes=4, formats=BITMOD4, max_m=8, max_n=8,
                             max_k=32)
    link, bus = _golden_board(board)
    asked = gcore.CoreConfig(rows=4, cols=4, lanes=4, formats=BITMOD4, max_m=8, max_n=8,
                             max_k=32)
    dev = accel.Accelerator(link, asked)
    x, qt = make_job(asked, 4, 8, 32, 0)
    with pytest.raises(accel.ConfigMismatch) as info:
        dev.gemm(x, qt)
    message = str(info.value)
    assert "\n" not in message
    assert "array 2x2 on the board, 4x4 asked" in message
    assert [d[0] for d in info.value.differences] == ["array"]
    assert dev.frames == 0 and not bus.model.weights and not bus.model.acts

    other = gcore.CoreConfig(rows=2, cols=2, lanes=8, formats=scheme_formats("int4"),
                             act_format="fp16", max_m=8, max_n=8, max_k=32)
    with pytest.raises(accel.ConfigMismatch) as info:
        accel.Accelerator(_golden_board(board)[0], other).connect()
    names = [d[0] for d in info.value.differences]
    assert names == ["lanes", "weight formats", "activation format", "rounding",
                     "mantissa width", "exponent shift bits"]
    assert "weight formats bitmod4 (fp4_er_pos," in str(info.value)
    assert "int4 (int4_sym) asked" in str(info.value)

    # Clock and baud are compared when the host says what it expects.
    slow = protocol.LinkConfig(clk_freq=LINK.clk_freq, baud=500_000)
    with pytest.raises(accel.ConfigMismatch, match="baud 1000000 on the board, 500000 asked"):
        accel.Accelerator(_golden_board(board)[0], board, expect_link=slow).connect()
    accel.Accelerator(_golden_board(board)[0], board, expect_link=LINK).connect()

    # A bitstream without the block: refused with one line, unless the check is turned off.
    with pytest.raises(accel.ConfigMismatch, match="reports no configuration block"):
        accel.Accelerator(_golden_board(board, None)[0], board).connect()
    old, _ = _golden_board(board, None)
    dev = accel.Accelerator(old, board, check=False)
    assert accel.compare_with_golden(board, x[:4], qt, dev.gemm(x[:4], qt))["exact"]


def test_host_takes_the_device_configuration():
    """Without a config, the driver uses the device's: the GEMM is exact."""
    from bitmod.sim.tb.accel_tb import make_job

    link, _ = _golden_board(CORE)
    dev = accel.Accelerator(link)
    assert dev.config == CORE and dev.device == gcore.DeviceConfig.of(CORE, LINK)
    x, qt = make_job(CORE, 3, 3, 20, 1)
    assert accel.compare_with_golden(CORE, x, qt, dev.gemm(x, qt))["exact"]


class _GoldenSerial(LoopbackTransport):
    """Stands in for pyserial's port in ``bitmod run``: a golden iCEBreaker bitstream (its
    board defaults) behind its link, or silence (``answer=False``: a board at another baud)."""

    answer = True
    options: ClassVar[dict] = {}  # BuildConfig fields of the bitstream beyond the board's defaults

    def __init__(self, port, baudrate=115_200):
        from bitmod.fpga.build import BuildConfig

        config = BuildConfig("icebreaker", **self.options)
        bus = gcore.CoreBusModel(config.core, config.link)
        super().__init__(protocol.BridgeModel(bus, config.link.max_payload))

    def write(self, data):
        if self.answer:
            super().write(data)


def _cli(monkeypatch, capsys, *argv, answer=True):
    from bitmod.host import link as hlink
    from bitmod.tools import cli

    monkeypatch.setattr(hlink, "SerialTransport", _GoldenSerial)
    monkeypatch.setattr(_GoldenSerial, "answer", answer)
    status = cli.main(["run", "--port", "/dev/fake", "--board", "icebreaker", *argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_cli_run_asymmetric_weights_on_int_pes(monkeypatch, capsys):
    """A bitstream of int PEs built for int4_asym (zero points folded into int5 levels): run
    takes the scheme and the PE kind from the board and quantizes the way the core runs it
    (golden.gemm.quantize_for_core), bit-exact."""
    monkeypatch.setattr(_GoldenSerial, "options", {"scheme": "int4_asym", "pe": "int"})
    status, out, err = _cli(monkeypatch, capsys, "--random", "4", "8", "32")
    assert status == 0, err
    assert "--scheme int4_asym" in err and "--pe int" in err and "bit-exact:  yes" in out
    status, out, err = _cli(monkeypatch, capsys, "--random", "4", "8", "32", "--json")
    report = json.loads(out, parse_constant=lambda c: pytest.fail(f"non-strict JSON: {c}"))
    assert status == 0 and report["bit_exact"] and report["scheme"] == "int4_asym"


def test_cli_run_corrects_zero_points_on_bitserial_pes(monkeypatch, capsys):
    """A bit-serial bitstream built for int4_asym has the zero-point correction (int4 offset
    codes, zero points in the group metadata; the block's word 11 says so): run takes
    int4_asym from the board (the asymmetric scheme whose offset formats the block names, not
    the symmetric int4 with the same formats) and loads the tensor that way, bit-exact."""
    monkeypatch.setattr(_GoldenSerial, "options", {"scheme": "int4_asym", "pe": "bitserial"})
    status, out, err = _cli(monkeypatch, capsys, "--random", "4", "8", "32")
    assert status == 0, err
    assert "--scheme int4_asym" in err and "bit-exact:  yes" in out
    status, out, err = _cli(monkeypatch, capsys, "--random", "4", "8", "32", "--json")
    assert status == 0, err
    report = json.loads(out, parse_constant=lambda c: pytest.fail(f"non-strict JSON: {c}"))
    assert report["bit_exact"] and report["scheme"] == "int4_asym"


def test_cli_run_refuses_a_mismatched_array(monkeypatch, capsys):
    """bitmod run --array 4x4 against the iCEBreaker's default 2x2 (int PEs, int4, 4 lanes):
    one line naming the array (not "bit-exact: NO"); without the options the board's
    configuration is used, bit-exact."""
    status, out, err = _cli(monkeypatch, capsys, "--array", "4x4", "--random", "4", "8", "32")
    assert status == 2 and out == ""
    note, error = err.splitlines()  # the options taken from the board, then the error
    assert note == ("bitmod run: from the board's bitstream: --scheme int4 --lanes 4 "
                    "--act int8 --pe int")
    assert error.startswith("bitmod run: error: the board's bitstream differs")
    assert "array 2x2 on the board, 4x4 asked" in error and "bit-exact" not in err

    status, out, err = _cli(monkeypatch, capsys, "--random", "4", "8", "32", "--json")
    assert status == 0 and err == ""
    report = json.loads(out, parse_constant=lambda c: pytest.fail(f"non-strict JSON: {c}"))
    assert report["bit_exact"] and report["scheme"] == "int4"

    status, out, err = _cli(monkeypatch, capsys, "--random", "4", "8", "32")
    assert status == 0 and "bit-exact:  yes" in out
    assert "from the board's bitstream: --scheme int4 --array 2x2 --lanes 4 --act int8" in err


def test_cli_run_names_the_baud_when_the_board_is_silent(monkeypatch, capsys):
    status, out, err = _cli(monkeypatch, capsys, "--baud", "57600", "--timeout", "0.01",
                            answer=False)
    assert status == 2 and out == ""
    assert err == ("bitmod run: error: no answer from the board on /dev/fake at 57600 baud: "
                   "was its bitstream built with --baud 57600 (bitmod build --baud), is it "
                   "programmed, and is this its port?\n")
    # The same silence with every option given fails on the first request, the same way.
    status, _, err = _cli(monkeypatch, capsys, "--scheme", "bitmod4", "--array", "2x2",
                          "--lanes", "4", "--act", "int8", "--pe", "bitserial", "--timeout",
                          "0.01", answer=False)
    assert status == 2 and "no answer from the board on /dev/fake at 115200 baud" in err
    assert LinkTimeout  # the error the host raises, turned into that line
