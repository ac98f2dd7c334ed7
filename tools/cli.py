"""The ``bitmod`` command line.

Each sub-command lives in its own module under ``tools/`` and exposes ``register(subparsers)``,
which adds its parser and sets ``func`` to a callable taking the parsed arguments and returning
an exit code. Errors a user can cause (bad names, shapes, files, parameters) are raised as
``ValueError``/``OSError``/:class:`CLIError` (or a :class:`golden.checks.BitmodError`: a
tool, a simulation, the link or the device failed) and printed as one line without a
traceback, exit status 2; so is running out of memory.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys

from bitmod.golden.checks import BitmodError

__all__ = ["CLIError", "main", "parse_array"]

# Sub-command -> the module that registers it, in the order shown by ``bitmod --help``.
COMMANDS = {
    "doctor": "bitmod.tools.cmd_doctor",
    "formats": "bitmod.tools.cmd_formats",
    "quantize": "bitmod.tools.cmd_quantize",
    "synth": "bitmod.tools.cmd_synth",
    "verify": "bitmod.tools.cmd_verify",
    "eval": "bitmod.tools.cmd_eval",
    "build": "bitmod.tools.cmd_build",
    "run": "bitmod.tools.cmd_run",
    "bench": "bitmod.tools.bench",
    "sweep": "bitmod.tools.sweep",
}
COMMAND_MODULES = tuple(COMMANDS.values())


class CLIError(Exception):
    """An error caused by the user's input; printed as one line, exit status 2."""


def parse_array(text: str) -> tuple[int, int]:
    """``"4x8"`` -> ``(4, 8)`` (rows x columns); shared by the commands that take ``--array``."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX*]\s*(\d+)\s*", text)
    if not match:
        raise CLIError(f"--array takes ROWSxCOLS (e.g. 4x4), not {text!r}")
    return int(match[1]), int(match[2])


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``bitmod`` parser with every sub-command, or only ``only`` (a :data:`COMMANDS`
    name): a command then imports its own module and not the others' (Amaranth, the FPGA
    flow, ...), which keeps its start-up short."""
    parser = argparse.ArgumentParser(
        prog="bitmod",
        description="Open accelerator generator for low-bit LLM inference.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        if only is None or name == only:
            importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv[0] if argv and argv[0] in COMMANDS else None)
    args = parser.parse_args(argv)
    try:
        status = args.func(args)
    except BrokenPipeError:  # output piped into `head` and the like: not an error
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (stays open until exit)
        return 0
    except (CLIError, ValueError, OSError, BitmodError) as error:
        print(f"bitmod {args.command}: error: {error}", file=sys.stderr)
        return 2
    except MemoryError:  # inputs are checked before allocating; this is the last resort
        print(f"bitmod {args.command}: error: out of memory (the problem is too large for this "
              "machine)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bitmod {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0 if status is None else int(status)


if __name__ == "__main__":
    sys.exit(main())
