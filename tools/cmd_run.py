"""``bitmod run --port PORT``: run a quantized GEMM on a real board over its UART link.

The board must carry a bitstream made by ``bitmod build`` with the same ``--board``, ``--array``,
``--lanes``, ``--act`` and ``--weight-bits``: those options give the core parameters the host
needs for the address map. The command quantizes the weights (``--random M N K`` Gaussian, or
``--npy``), loads weights and activations into the board's buffers, runs the job, reads the
outputs and counters (``host/accel.py``) and compares every output code with ``golden/gemm.py``.
"""

from __future__ import annotations

import json

import numpy as np

from bitmod.tools.cli import CLIError, parse_array


def _problem(args, rng, max_m: int, max_n: int, max_k: int):
    if args.npy is not None:
        w = np.load(args.npy, allow_pickle=False)
        if w.ndim != 2:
            raise ValueError(f"{args.npy}: weights must be 2-D [out, in], got shape {w.shape}")
        m = args.tokens
    else:
        m, n, k = args.random
        if min(m, n, k) < 1:
            raise CLIError(f"--random takes positive M N K, not {m} {n} {k}")
        w = rng.standard_normal((n, k)) / np.sqrt(k)
    n, k = w.shape
    if m > max_m or n > max_n or k > max_k:
        raise CLIError(f"GEMM {m}x{n}x{k} exceeds the board's buffers ({max_m}x{max_n}x{max_k})")
    if not np.isfinite(w).all():
        raise ValueError("weights contain NaN/Inf values")
    x = rng.standard_normal((m, k))
    return w, x


def _run(args) -> int:
    from bitmod.fpga.build import BuildConfig
    from bitmod.golden import gemm as ggemm
    from bitmod.golden.quantize import quantize
    from bitmod.host.accel import Accelerator, compare_with_golden
    from bitmod.host.link import HostLink, LinkError, SerialTransport

    rows = cols = None
    if args.array:
        rows, cols = parse_array(args.array)
    config = BuildConfig(args.board, rows=rows, cols=cols, lanes=args.lanes, act=args.act,
                         weight_bits=args.weight_bits)
    params = config.core_params()
    rng = np.random.default_rng(args.seed)
    w, x = _problem(args, rng, params["max_m"], params["max_n"], params["max_k"])
    scheme = "bitmod4" if args.weight_bits == 4 else "bitmod3"
    qt = quantize(w, scheme, group_size=params["group_size"], scale_format="int8")
    if params["act_format"] == "int8":
        xq, _ = ggemm.quantize_activations_int8(x)
    else:
        xq = x.astype(np.float16)
    try:
        link = HostLink(SerialTransport(args.port, args.baud), timeout=args.timeout)
        result = Accelerator(link, params).gemm(xq, qt)
    except LinkError as error:
        raise CLIError(f"link to {args.port}: {error}") from None
    check = compare_with_golden(params, xq, qt, result)
    report = {"board": args.board, "port": args.port, "m": int(xq.shape[0]),
              "n": int(qt.shape[0]), "k": int(qt.shape[1]), "scheme": scheme,
              "bit_exact": bool(check["exact"]), "mismatches": int(check["mismatches"]),
              "counters": {k: int(v) for k, v in result["counters"].items()}}
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(f"board:      {report['board']} on {report['port']}")
        print(f"GEMM:       {report['m']}x{report['n']}x{report['k']}, {scheme} weights")
        print(f"bit-exact:  {'yes' if report['bit_exact'] else 'NO'} "
              f"({report['mismatches']} mismatches)")
        print(f"counters:   {report['counters']}")
    return 0 if report["bit_exact"] else 1


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "run", help="run a quantized GEMM on a board over UART and check it against golden")
    parser.add_argument("--port", required=True, help="serial port of the board, e.g. "
                        "/dev/ttyUSB0")
    parser.add_argument("--board", required=True, help="the board the bitstream was built for")
    parser.add_argument("--baud", type=int, default=115_200)
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds per reply")
    parser.add_argument("--array", metavar="RxC", help="as given to bitmod build")
    parser.add_argument("--lanes", type=int, help="as given to bitmod build")
    parser.add_argument("--act", choices=("int8", "fp16"), default="int8")
    parser.add_argument("--weight-bits", type=int, choices=(3, 4), default=4)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--random", nargs=3, type=int, metavar=("M", "N", "K"),
                        default=[4, 8, 32])
    source.add_argument("--npy", help="weights [out, in] from a .npy file")
    parser.add_argument("--tokens", type=int, default=4, help="tokens M for --npy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=_run)
