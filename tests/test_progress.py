"""Progress on stderr (tools/progress.py, rich): drawn only on a terminal and never with --json;
the stages of a board build followed through the tools' logs (fpga/build.py StageWatcher)."""

import io
import json
import os
import pty
import subprocess
import sys

import pytest

from bitmod.fpga.build import StageWatcher
from bitmod.tools.progress import Progress


def _strict(text: str):
    def refuse(constant):
        raise ValueError(f"non-strict JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def _read_all(fd: int) -> bytes:
    os.set_blocking(fd, False)
    out = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except (BlockingIOError, OSError):
            return out
        if not chunk:
            return out
        out += chunk


def test_progress_is_off_without_a_terminal():
    stream = io.StringIO()
    progress = Progress(True, stream=stream)
    assert not progress.enabled
    with progress:
        progress("Yosys synthesis", "abc9")
        progress("nextpnr routing")
    assert stream.getvalue() == "" and progress.stage is None


def test_progress_draws_steps_on_a_terminal():
    master, slave = pty.openpty()
    with os.fdopen(slave, "w") as stream:
        progress = Progress(True, stream=stream)
        assert progress.enabled and not Progress(False, stream=stream).enabled
        with progress:
            progress("Yosys synthesis")
            progress("Yosys synthesis", "abc9")  # the same stage: a detail, not a new line
            progress("nextpnr placement")
        stream.flush()
    text = _read_all(master).decode(errors="replace")
    os.close(master)
    assert "Yosys synthesis: abc9" in text and "nextpnr placement" in text
    assert text.count("✓") >= 2  # both steps end with a check mark


def test_progress_marks_a_failed_step():
    master, slave = pty.openpty()
    with os.fdopen(slave, "w") as stream:
        progress = Progress(True, stream=stream)
        with pytest.raises(RuntimeError), progress:
            progress("nextpnr packing")
            progress("nextpnr placement")
            raise RuntimeError("does not fit")
        stream.flush()
    text = _read_all(master).decode(errors="replace")
    os.close(master)
    final = text.rsplit("\x1b[?25h", 1)[0]  # the last frame, before the cursor comes back
    assert "✗" in text and "nextpnr placement" in text.split("✗")[-1]
    assert "✓" in final  # packing finished


def test_stage_watcher_follows_the_logs(tmp_path):
    """The stages of a Yosys + nextpnr + icepack run, in order, each once, as the logs grow
    (lines may arrive cut in two)."""
    calls = []
    yosys, nextpnr = tmp_path / "top.rpt", tmp_path / "top.tim"
    watcher = StageWatcher(yosys, nextpnr, "icepack", lambda *a: calls.append(a))
    watcher.poll()
    assert calls == []  # nothing started yet
    steps = [
        (yosys, "\n-- Parsing `top.ys' --\n"),
        (yosys, "1. Executing RTLIL frontend.\n2. Executing SYNTH_ICE40 pass.\n2.1. Exec"),
        (yosys, "uting HIERARCHY pass (managing design hierarchy).\n"),
        (yosys, "2.52. Executing ABC9 pass.\n2.52.1. Executing ABC9_OPS pass.\n"),
        (nextpnr, "Info: Packing constants..\nInfo: Packing IOs..\n"),
        (nextpnr, "Info: Creating initial analytic placement for 91 cells\n"),
        (nextpnr, "Info: Running simulated annealing placer for refinement.\n"),
        (nextpnr, "Info: Routing..\nInfo: Routing 228 arcs.\n"),
        (nextpnr, "Info: Program finished normally.\n"),
    ]
    for path, text in steps:
        with open(path, "a") as file:
            file.write(text)
        watcher.poll()
    assert calls == [("Yosys synthesis",), ("Yosys synthesis", "synth_ice40"),
                     ("Yosys synthesis", "hierarchy"), ("Yosys synthesis", "abc9_ops"),
                     ("nextpnr packing",), ("nextpnr placement",), ("nextpnr routing",),
                     ("icepack bitstream",)]


def test_stage_watcher_thread_reports_a_running_build(tmp_path):
    calls = []
    log = tmp_path / "nextpnr.log"
    with StageWatcher(tmp_path / "yosys.log", log, "ecppack", lambda *a: calls.append(a),
                      interval=0.01):
        log.write_text("Info: Packing IOs..\nInfo: Running main analytical placer.\n")
    assert calls == [("nextpnr placement",)]  # a stage skipped between polls is not replayed


@pytest.mark.parametrize("json_flag", [True, False])
def test_verify_json_stays_strict_with_a_terminal_on_stderr(json_flag):
    """``bitmod verify`` with stderr on a terminal: --json writes only strict JSON to stdout
    and no progress at all; without --json the steps are drawn on stderr, not stdout."""
    master, slave = pty.openpty()
    argv = [sys.executable, "-m", "bitmod.tools", "verify", "--random", "2", "4", "16",
            "--array", "1x1", "--scheme", "int4", "--act", "int8", "--group-size", "16"]
    result = subprocess.run(argv + (["--json"] if json_flag else []), stdout=subprocess.PIPE,
                            stderr=slave, timeout=600, check=False)
    os.close(slave)
    err = _read_all(master).decode(errors="replace")
    os.close(master)
    out = result.stdout.decode()
    assert result.returncode == 0, err
    assert "\x1b" not in out
    if json_flag:
        assert _strict(out)["bit_exact"] is True
        assert err == ""
    else:
        assert "bit-exact" in out and "✓" in err and "golden model" in err
