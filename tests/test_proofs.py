"""hdl.proofs: SymbiYosys proofs of the bridge, the stream ports, the command port, the PE
accumulators and the array's drain, each beside a broken variant that the same property must
catch (FAIL).

Every test runs sby for real (``sim.formal.prove``) on small parameters; docs/verification.md
lists the properties, modes, depths and measured times.
"""

import re

import pytest

from bitmod.golden.core import CoreConfig
from bitmod.golden.gemm import MERGE_LATENCY, ArrayConfig
from bitmod.golden.pe import PEConfig
from bitmod.hdl.array.array import SystolicArray
from bitmod.hdl.proofs import (
    BridgeProof,
    BrokenResponder,
    BrokenStage,
    CommandPortProof,
    DrainProof,
    PEOverflowProof,
    StreamRulesProof,
)
from bitmod.sim.formal import prove

# Small enough for seconds per proof, large enough to have every structure the property is
# about: a 2 x 2 array of 2-lane PEs with two groups per output, scales and (FP16) the
# activation front end; the core around such an array.
ARRAYS = {
    "int8": ArrayConfig(rows=2, cols=2, lanes=2, group_size=4, formats=("fp4",),
                        scale_bits=2, max_groups=2),
    "fp16": ArrayConfig(rows=2, cols=2, lanes=2, group_size=4, formats=("fp4",),
                        act_format="fp16", mant_width=6, scale_bits=2, max_groups=2),
}
CORE = dict(rows=2, cols=2, lanes=2, group_size=4, formats=("fp4",), scale_bits=2,
            max_m=4, max_n=4, max_k=8)
# Two-step bit-serial scales, a group exponent, two groups of two weights per output.
PE = PEConfig(lanes=1, act_width=3, group_size=2, formats=("int2",), scale_bits=2,
              exp_bits=1, max_groups=2)


def _failed_at(result) -> set[int]:
    """Source lines (in hdl/proofs.py) of the assertions sby reports as failed."""
    return {int(n) for n in re.findall(r"failed assertion .*proofs\.py:(\d+)", result.log_tail)}


# ---- bridge: no bus transaction for a frame with a bad CRC or length -------------------------

@pytest.mark.parametrize("registered_decode", [False, True])
def test_bridge_issues_only_checked_frames(registered_decode, tmp_path):
    """Both forms of the bridge: the ECP5 boards' and the iCE40's (registered DECODE checks,
    one-hot FSM)."""
    result = prove(BridgeProof(registered_decode=registered_decode), tmp_path, mode="prove",
                   depth=2)
    assert result.status == "PASS", result.log_tail


@pytest.mark.parametrize("fault", ["reflected_crc", "long_payload"])
def test_bridge_proof_catches_broken_bridge(fault, tmp_path):
    # BMC up to the earliest bus request; the property itself must fail there, not an
    # auxiliary invariant (aux=False asserts none) or the harness.
    harness = BridgeProof(fault=fault, aux=False, steady=True)
    result = prove(harness, tmp_path, mode="bmc", depth=BridgeProof.FIRST_REQUEST + 1,
                   skip=BridgeProof.FIRST_REQUEST, presat=False, map_memories=True)
    assert result.status == "FAIL", result.log_tail
    assert _failed_at(result) == {harness.property_src[1]}, result.log_tail


# ---- stream rules: the array's ports, and a broken stage ----------------------------------------

@pytest.mark.parametrize("name", sorted(ARRAYS))
def test_array_streams_obey_the_rules(name, tmp_path):
    harness = StreamRulesProof(SystolicArray(ARRAYS[name]), inputs=["i_stream"],
                               outputs=["o_stream"])
    result = prove(harness, tmp_path, mode="prove", depth=2)
    assert result.status == "PASS", result.log_tail


@pytest.mark.parametrize("kind", ["overwrite", "drop"])
def test_stream_rules_catch_broken_stage(kind, tmp_path):
    harness = StreamRulesProof(BrokenStage(kind=kind), inputs=["i_stream"],
                               outputs=["o_stream"])
    result = prove(harness, tmp_path, mode="bmc", depth=4)
    assert result.status == "FAIL", result.log_tail


def test_stream_rules_refuse_a_non_stream_port():
    with pytest.raises(ValueError, match="o_stream"):
        StreamRulesProof(BrokenStage(), inputs=["o_stream"], outputs=[])


# ---- core command port: one response per command, stream rules on every core stream ---------

@pytest.mark.parametrize("act_format", ["int8", "fp16"])
def test_core_command_port(act_format, tmp_path):
    extra = {"act_format": "fp16", "mant_width": 6} if act_format == "fp16" else {}
    # FP16: the stream rules inside the core need a whole-array invariant (CommandPortProof).
    harness = CommandPortProof(CoreConfig(**CORE, **extra), internal=act_format == "int8")
    result = prove(harness, tmp_path, mode="prove", depth=2)
    assert result.status == "PASS", result.log_tail


@pytest.mark.parametrize("kind", ["overwrite", "double"])
def test_command_port_proof_catches_broken_responder(kind, tmp_path):
    config = CoreConfig(**CORE)
    harness = CommandPortProof(config, dut=BrokenResponder(config, kind=kind))
    result = prove(harness, tmp_path, mode="bmc", depth=4)
    assert result.status == "FAIL", result.log_tail


# ---- PE accumulators: no wrap for the documented bounds ---------------------------------------

def test_pe_accumulators_never_wrap(tmp_path):
    harness = PEOverflowProof(PE)
    result = prove(harness, tmp_path, mode="bmc", depth=harness.depth())
    assert result.status == "PASS", result.log_tail


@pytest.mark.parametrize("what", ["groups", "steps"])
def test_pe_overflow_proof_catches_oversized_stream(what, tmp_path):
    # Twice the groups per output (the output accumulator wraps) or twice the group size (the
    # group accumulator wraps) of what the widths were sized for.
    more = ({"feed_groups": 2 * PE.max_groups} if what == "groups"
            else {"feed_steps": 2 * PE.group_size // PE.lanes})
    harness = PEOverflowProof(PE, steady=True, **more)
    result = prove(harness, tmp_path, mode="bmc", depth=harness.depth())
    assert result.status == "FAIL", result.log_tail
    broken = "output" if what == "groups" else "group"
    assert _failed_at(result) == {harness.property_src[broken][1]}, result.log_tail


# ---- array drain: nothing lost or out of row-major order, under any backpressure --------------

# Both gather forms; three rows split the column unevenly (two rows and one).
DRAINS = {**ARRAYS, "int8 3x2": ArrayConfig(rows=3, cols=2, lanes=2, group_size=4,
                                           formats=("fp4",), scale_bits=2, max_groups=2)}


@pytest.mark.parametrize(("name", "split"), [(name, None) for name in sorted(DRAINS)]
                         + [("int8 3x2", False)])
def test_drain_loses_nothing_and_keeps_order(name, split, tmp_path):
    result = prove(DrainProof(DRAINS[name], split_gather=split), tmp_path, mode="prove",
                   depth=4)
    assert result.status == "PASS", result.log_tail


@pytest.mark.parametrize("fault", ["extra_credit", "mirrored_columns"])
def test_drain_proof_catches_broken_drain(fault, tmp_path):
    # BMC at the earliest failing step only (DrainProof's docstring): with one credit too many,
    # a column FIFO full when the column's R * Q + 1-th output is gathered; a mirrored row at
    # the converter's input after MERGE_LATENCY cycles. The property must fail there, not an
    # auxiliary invariant (aux=False asserts none).
    config = ARRAYS["int8"]
    harness = DrainProof(config, aux=False, fault=fault)
    step = config.rows * config.drain_tiles + 1 if fault == "extra_credit" else MERGE_LATENCY
    result = prove(harness, tmp_path, mode="bmc", depth=step + 1, skip=step, presat=False)
    assert result.status == "FAIL", result.log_tail
    broken = ["lost"] if fault == "extra_credit" else ["order", "ahead"]
    failed = _failed_at(result)
    assert failed and failed <= {harness.property_src[name][1] for name in broken}, \
        result.log_tail
