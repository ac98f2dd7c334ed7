"""``bitmod run --port PORT``: run a quantized GEMM on a real board over its UART link.

The board must carry a bitstream made by ``bitmod build`` with the same ``--board``,
``--scheme``, ``--array``, ``--lanes`` and ``--act``: those options give the core the host
addresses. The command quantizes the weights with the build's scheme (``--random M N K``
Gaussian, or ``--npy``), loads weights and activations into the board's buffers, runs the job,
reads the outputs and counters (``host/accel.py``) and compares every output code with
``golden/gemm.py``. The flow is :func:`tools.api.run`.
"""

from __future__ import annotations

from bitmod.tools.cli import CLIError
from bitmod.tools.cmd_build import add_build_options, build_options


def _run(args) -> int:
    from bitmod.host.link import LinkError
    from bitmod.tools.api import run

    try:
        report = run(args.port, args.board, weights=args.npy, random=args.random,
                     tokens=args.tokens, baud=args.baud, timeout=args.timeout, seed=args.seed,
                     **build_options(args))
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
    add_build_options(parser)
    parser.add_argument("--baud", type=int, default=115_200)
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds per reply")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--random", nargs=3, type=int, metavar=("M", "N", "K"),
                        default=[4, 8, 32])
    source.add_argument("--npy", help="weights [out, in] from a .npy file")
    parser.add_argument("--tokens", type=int, default=4, help="tokens M for --npy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=_run)
