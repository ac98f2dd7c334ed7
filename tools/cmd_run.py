"""``bitmod run --port PORT``: run a quantized GEMM on a real board over its UART link.

The board must carry a bitstream made by ``bitmod build``. The bitstream reports its
configuration (array, lanes, weight formats, activation format, buffers, clock, baud: the
configuration block of ``docs/protocol.md``): ``--scheme``, ``--array``, ``--lanes`` and
``--act`` left out are taken from it, and given ones that differ from it are refused with one
line naming the fields. The command quantizes the weights with the scheme (``--random M N K``
Gaussian, or ``--npy``), loads weights and activations into the board's buffers, runs the job,
reads the outputs and counters (``host/accel.py``) and compares every output code with
``golden/gemm.py``. The flow is :func:`tools.api.run`.

No answer at all is reported as a baud-rate question (the usual cause: a bitstream built with
another ``bitmod build --baud``, or the wrong port).
"""

from __future__ import annotations

import sys

from bitmod.tools.cli import CLIError
from bitmod.tools.cmd_build import add_build_options, build_options


def no_answer(port: str, baud: int) -> str:
    """The one line for a board that does not answer (:class:`host.link.LinkTimeout`)."""
    return (f"no answer from the board on {port} at {baud} baud: was its bitstream built with "
            f"--baud {baud} (bitmod build --baud), is it programmed, and is this its port?")


def options_from_device(args) -> dict:
    """:func:`build_options`, with the ones left out read from the board's configuration
    block (one READ frame); a note on stderr names what was taken. A port that cannot be
    opened leaves them out: :func:`tools.api.run` checks its arguments, then fails on it."""
    from bitmod.fpga.boards import get_board

    options = build_options(args)
    if None not in (args.scheme, args.array, args.lanes, args.act, args.pe):
        return options
    get_board(args.board)  # an unknown board: one line before any connection
    from bitmod.host.accel import read_device_config
    from bitmod.host.link import HostLink, SerialTransport

    try:
        transport = SerialTransport(args.port, args.baud)
    except OSError:
        return {k: v for k, v in options.items() if v is not None}
    with transport:
        device = read_device_config(HostLink(transport, timeout=args.timeout))
    taken = []
    if args.scheme is None:
        if not device.schemes:
            raise CLIError(f"the board's weight formats ({device.describe()['weight formats']})"
                           " are not those of a registered scheme; give --scheme")
        options["scheme"] = device.schemes[0]
        taken.append(f"--scheme {options['scheme']}")
    if args.array is None:
        options["rows"], options["cols"] = device.rows, device.cols
        taken.append(f"--array {device.rows}x{device.cols}")
    if args.lanes is None:
        options["lanes"] = device.lanes
        taken.append(f"--lanes {device.lanes}")
    if args.act is None:
        options["act"] = device.act_format
        taken.append(f"--act {device.act_format}")
    if args.pe is None:
        options["pe"] = device.pe_kind
        taken.append(f"--pe {device.pe_kind}")
    if not args.json:
        print(f"bitmod run: from the board's bitstream: {' '.join(taken)}", file=sys.stderr)
    return options


def _run(args) -> int:
    from bitmod.host.link import LinkError, LinkTimeout
    from bitmod.tools.api import run

    try:
        report = run(args.port, args.board, weights=args.npy, random=args.random,
                     tokens=args.tokens, baud=args.baud, timeout=args.timeout, seed=args.seed,
                     **options_from_device(args))
    except LinkTimeout:
        raise CLIError(no_answer(args.port, args.baud)) from None
    except LinkError as error:
        raise CLIError(f"link to {args.port}: {error}") from None
    if args.json:
        print(report.to_json())
    else:
        print(f"board:      {report.board} on {report.port}")
        print(f"GEMM:       {report.m}x{report.n}x{report.k}, {report.scheme} weights")
        print(f"bit-exact:  {'yes' if report.bit_exact else 'NO'} "
              f"({report.mismatches} mismatches)")
        print(f"counters:   {report.counters} ("
              f"{'equal' if report.counters_match_model else 'DIFFER from'} the golden model)")
    return 0 if report.bit_exact else 1


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "run", help="run a quantized GEMM on a board over UART and check it against golden")
    parser.add_argument("--port", required=True, help="serial port of the board, e.g. "
                        "/dev/ttyUSB0")
    parser.add_argument("--board", required=True, help="the board the bitstream was built for")
    add_build_options(parser, from_device=True)
    parser.add_argument("--baud", type=int, default=115_200,
                        help="UART bit rate (default 115200; the bitstream's bitmod build --baud)")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds per reply")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--random", nargs=3, type=int, metavar=("M", "N", "K"),
                        default=[4, 8, 32])
    source.add_argument("--npy", help="weights [out, in] from a .npy file")
    parser.add_argument("--tokens", type=int, default=4, help="tokens M for --npy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=_run)
