"""The ``cnntui`` command. Without a subcommand it opens the debugger (the only place this
package touches the UI, imported lazily); the subcommands are headless."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from cnntui.model import PRETRAINED, SEED, WeightsError
from cnntui.terminal import replace_unencodable, silence

# one default for the debugger, trace and verify, so a digit gets the same prediction in each:
# the shipped weights (sample_data/pretrained.npz, made by `cnntui train`); seed is the lesson's
DEFAULT_WEIGHTS = PRETRAINED


class UserError(Exception):
    """Something the user can fix; printed as one sentence, exit status 1."""


class Killed(BaseException):
    """SIGTERM or SIGHUP, raised in the main thread so that whatever is under way unwinds: a
    save in progress removes its temp file (``model.save_weights``)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


KILL_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n))


def _raise_killed(signum: int, frame: object) -> None:
    for s in KILL_SIGNALS:  # a second kill must not interrupt the cleanup
        signal.signal(s, signal.SIG_IGN)
    raise Killed(signum)


@contextmanager
def _unwind_on_kill() -> Iterator[None]:
    """While the block runs, SIGTERM and SIGHUP raise Killed instead of ending the process on
    the spot; the previous handlers come back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise_killed) for s in KILL_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _index(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; digit indices start at 0")
    return value


APP_OPTIONS = ("--index", "--weights", "--color", "--arch", "--data", "--image", "--label",
               "--no-torch")
ARCH_HELP = ("simple (the lesson's SimpleCNN, default) | strided (stride-2 convs, no pooling) | "
             "separable (conv2 depthwise then pointwise); a weights file picks its own")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnntui", description="A terminal debugger for a CNN written from scratch in NumPy.")
    parser.add_argument("--version", action=_VersionAction)
    parser.add_argument("--index", type=_index, default=None,
                        help="digit to open (digits 0-1796, MNIST 0-69999: training digits "
                             "first; default: the test digit the network is least sure about)")
    parser.add_argument("--weights", default=DEFAULT_WEIGHTS, help=WEIGHTS_HELP)
    parser.add_argument("--color", choices=["auto", "truecolor", "256", "16", "none"],
                        default="auto", help="colour depth of the heatmaps")
    add_arch(parser)
    add_input(parser)
    add_no_torch(parser, "the diff pane stays empty and says why")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def weights_and_index(p: argparse.ArgumentParser) -> None:
        add_arch(p)
        p.add_argument("--index", type=_index, default=None,
                       help="digit index (digits 0-1796, MNIST 0-69999; default 0)")
        p.add_argument("--weights", default=DEFAULT_WEIGHTS, help=WEIGHTS_HELP)
        p.add_argument("--dtype", choices=["float64", "float32"], default="float64")
        add_input(p)

    p = sub.add_parser("trace", help="every step of one digit's forward and backward pass")
    weights_and_index(p)
    p.add_argument("--json", action="store_true", help="print a JSON document instead of a table")
    p.add_argument("--values", action="store_true", help="with --json: include every value")
    add_no_torch(p, "the vs torch column stays empty")

    p = sub.add_parser("explain", help="how one cell of one step was computed, from its parts")
    weights_and_index(p)
    from cnntui.explain_cli import add_arguments
    add_arguments(p)

    p = sub.add_parser("verify", help="check the trace against PyTorch and finite differences")
    weights_and_index(p)
    p.add_argument("--json", action="store_true")
    add_no_torch(p, "verify then says it cannot run (exit status 2)")

    p = sub.add_parser("summary", help="each architecture's layers, shapes, parameters and MACs")
    add_arch(p)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("bench", help="time the lesson loops, the NumPy path and PyTorch")
    add_arch(p)
    add_data(p)
    p.add_argument("--json", action="store_true")
    p.add_argument("--repeat", type=int, default=None,
                   help="timed rounds per measurement, interleaved (default 15)")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for NumPy's BLAS and for PyTorch alike (default 1)")
    p.add_argument("--batch", type=int, nargs="+", default=None, metavar="N",
                   help="batch sizes to time (default: 1 64 256)")

    add_train_parser(sub)
    add_serve_parser(sub)
    return parser


WEIGHTS_HELP = (f"{DEFAULT_WEIGHTS} (default: shipped, trained on MNIST for --data mnist and "
                "--image, else on the digits) | seed (the lesson's) | PATH to an .npz")


def _label(text: str) -> int:
    value = _index(text)
    if value > 9:
        raise argparse.ArgumentTypeError(f"{value} is not a digit; labels are 0 to 9")
    return value


def _data(text: str) -> str:
    name, colon, folder = text.partition(":")
    if name not in ("digits", "mnist") or (colon and (name == "digits" or not folder)):
        raise argparse.ArgumentTypeError(
            f"there is no data set {text!r}: choose digits, mnist or mnist:DIR")
    return text


def add_data(p: argparse.ArgumentParser) -> None:
    from cnntui.data import DATA_HELP

    p.add_argument("--data", type=_data, default="digits", metavar="digits|mnist[:DIR]",
                   help=DATA_HELP)


def add_input(p: argparse.ArgumentParser) -> None:
    """--data, --image and --label: what the debugger, trace, verify and explain look at."""
    add_data(p)
    p.add_argument("--image", metavar="FILE",
                   help="your own digit instead (PNG, JPEG, PGM or .npy), prepared as MNIST's")
    p.add_argument("--label", type=_label, default=None,
                   help="the label for the loss (default: the digit's own; for --image, the "
                        "predicted class)")


def add_no_torch(p: argparse.ArgumentParser, then: str) -> None:
    p.add_argument("--no-torch", action="store_true",
                   help=f"never load PyTorch (for machines without it): {then}")


def add_arch(p: argparse.ArgumentParser) -> None:
    from cnntui.model import ARCHITECTURES

    p.add_argument("--arch", choices=list(ARCHITECTURES), default=None, help=ARCH_HELP)


def add_train_parser(sub: argparse._SubParsersAction) -> None:
    """``cnntui train``; flags left out take TrainConfig's defaults (cnntui/training/config.py)."""
    from cnntui.training import DTYPES, OPTIMIZERS, SCHEDULES, TrainConfig

    d = TrainConfig()
    p = sub.add_parser("train", help="train the network on the digits or MNIST (headless)",
                       description="Train the network (--arch) on a data set's training split "
                                   "and score it on its test split. Ctrl-C stops after the "
                                   "current batch.")
    add_arch(p)
    add_data(p)
    m = TrainConfig.for_data("mnist")
    p.add_argument("--epochs", type=int, help=f"passes over the training set (default "
                                              f"{d.epochs}, {m.epochs} for MNIST)")
    p.add_argument("--lr", type=float, help=f"base learning rate (default {d.lr:g})")
    p.add_argument("--optimizer", choices=OPTIMIZERS, help=f"default {d.optimizer}")
    p.add_argument("--batch-size", type=int, help=f"default {d.batch_size}")
    p.add_argument("--seed", type=int, help=f"data order and augmentation (default {d.seed})")
    p.add_argument("--no-augment", action="store_true", help="no random shifts of the images")
    p.add_argument("--dtype", choices=DTYPES, help=f"default {d.dtype}")
    p.add_argument("--weight-decay", type=float,
                   help=f"on the weights, not the biases (default {d.weight_decay:g})")
    p.add_argument("--momentum", type=float, help=f"for sgd (default {d.momentum:g})")
    p.add_argument("--schedule", choices=SCHEDULES, help=f"learning rate schedule (default "
                                                         f"{d.schedule})")
    p.add_argument("--weights", default=SEED, help="start from: seed (default) | pretrained | PATH")
    p.add_argument("--out", help="save the trained weights to this .npz")
    p.add_argument("--json", action="store_true", help="print the history as JSON on stdout")
    p.add_argument("--train-limit", type=int, metavar="N",
                   help="train on the first N training digits only (quick checks)")
    p.add_argument("--bench", action="store_true",
                   help="compare training images/s with PyTorch for these settings, then exit")
    p.add_argument("--bench-epochs", type=int, default=3, metavar="E",
                   help="epochs per --bench measurement (default 3)")
    p.add_argument("--bench-threads", type=int, metavar="T",
                   help="threads for both sides of --bench (default: all cores)")


SERVE_HELP = ("the debugger in a web browser, one session per tab (textual-serve; no login: "
              "anyone who can reach the port gets a session)")


def _count(text: str, what: str, low: int, high: int | None = None) -> int:
    if not text.isdigit() or int(text) < low or (high is not None and int(text) > high):
        upto = f" to {high}" if high else ""
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a {what}: a whole number from {low}{upto}")
    return int(text)


def add_serve_parser(sub: argparse._SubParsersAction) -> None:
    """``cnntui serve``; the options it does not know are the debugger's, checked in main."""
    p = sub.add_parser(
        "serve", help=SERVE_HELP, description=SERVE_HELP[0].upper() + SERVE_HELP[1:] + ".",
        usage="cnntui serve [-h] [--host HOST] [--port PORT] [--max-sessions N] "
              "[debugger options such as --data, --weights, --index]",
        epilog="Any other options go to the debugger each tab runs, for example cnntui serve "
               "--port 8001 --data mnist --weights my.npz. textual-serve has no login or "
               "encryption: keep the default loopback host and reach it with ssh -L "
               "8000:localhost:8000 SERVER, or put a proxy with authentication in front.")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1, this machine only; 0.0.0.0 "
                        "lets anyone on the network in, without a login)")
    p.add_argument("--port", type=lambda t: _count(t, "port", 1, 65535), default=8000,
                   help="default 8000")
    p.add_argument("--max-sessions", type=lambda t: _count(t, "number of sessions", 1),
                   metavar="N", help="refuse tabs past N live sessions, with a message "
                                     "(default: no limit)")


def _serve_app_args(rest: list[str]) -> list[str]:
    """The debugger's options given to ``cnntui serve``, checked as ``cnntui`` itself would
    before the server starts: a typo gets one sentence now, not a dead tab later."""
    parser = build_parser()
    app = parser.parse_args(rest)  # a bad option: argparse's one line, exit status 2
    if app.command:
        parser.error(f"cnntui serve runs the debugger; {app.command} is a command of its own, "
                     f"not an option of serve")
    _check_app_inputs(app)
    return rest


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    replace_unencodable(sys.stdout, sys.stderr)  # the commands themselves fall back to ASCII
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and args.command != "serve":  # serve hands the options it does not know on
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.app_args = rest
    if args.command:
        # the options before a command are the debugger's: silently ignoring them would show
        # another digit or other weights than the user asked for
        before = argv[:argv.index(args.command)]
        misplaced = [a.split("=")[0] for a in before if a.split("=")[0] in APP_OPTIONS]
        if misplaced:
            parser.error(f"{misplaced[0]} goes after the command: cnntui {args.command} "
                         f"{misplaced[0]} ...")
    try:
        if args.command != "bench":  # bench sets its own, per side (--threads)
            limit_threads()
        if args.command is None:
            # without a terminal it would wait for keys forever; a TEXTUAL_DRIVER (the web driver
            # of cnntui serve) brings its own input and output
            if not (os.environ.get("TEXTUAL_DRIVER")
                    or sys.stdin.isatty() and sys.stdout.isatty()):
                _check_app_inputs(args)  # a wrong --weights or --index is still told first
                raise UserError("the debugger needs a terminal for its input and output; "
                                "without one, use a command such as cnntui trace (see --help)")
            from screens.app import run_app  # the UI is imported only to launch it

            return run_app(args)
        with _unwind_on_kill():
            return _run_command(args)
    except Killed as e:
        print(f"cnntui: stopped by {signal.Signals(e.signum).name}; no file was left "
              f"half-written", file=sys.stderr)
        return 128 + e.signum
    except BrokenPipeError:  # `cnntui trace | head`: the reader has gone, nothing to report
        silence(sys.stdout)  # and the flush at exit must not fail either
        return 0
    except (UserError, WeightsError, IndexError, ValueError, OSError) as e:
        print(f"cnntui: {e}", file=sys.stderr)
        return 1
    except ImportError as e:
        from cnntui.reference_process import NO_TORCH, ReferenceUnavailable, torch_missing

        if isinstance(e, ReferenceUnavailable) or torch_missing(e):
            what = str(e) if isinstance(e, ReferenceUnavailable) else \
                f"{args.command or 'cnntui'} cannot run here: {NO_TORCH}"
            print(f"cnntui: {what}", file=sys.stderr)
            return 2  # not 1: verify's 1 says a tensor disagrees
        raise
    except KeyboardInterrupt:
        print("cnntui: interrupted", file=sys.stderr)
        return 130


class _VersionAction(argparse.Action):
    """argparse's version action, with the version looked up only when asked for
    (importlib.metadata is 15 ms of the app's first paint)."""

    def __init__(self, option_strings: list[str], dest: str, **kw: object) -> None:
        super().__init__(option_strings, argparse.SUPPRESS, nargs=0, default=argparse.SUPPRESS,
                         help="show the program's version number and exit")

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # noqa: ANN001
        print(f"cnntui {_version()}")
        parser.exit()


def _version() -> str:
    """The installed distribution's version (pyproject.toml's), for ``--version``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cnntui")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "(not installed)"


def limit_threads() -> int:
    """Every command but bench runs BLAS and PyTorch on $CNNTUI_THREADS threads, 1 unless set:
    on a busy 2-core machine two threads were slower (the README's training table)."""
    value = os.environ.get("CNNTUI_THREADS", "1")
    if not value.isdigit() or int(value) < 1:
        raise UserError(f"CNNTUI_THREADS must be a whole number of threads, at least 1, "
                        f"not {value!r}")
    import numpy  # noqa: F401  (threadpoolctl limits the BLAS libraries already loaded)
    from threadpoolctl import threadpool_limits

    threadpool_limits(int(value))
    os.environ.setdefault("OMP_NUM_THREADS", value)  # PyTorch reads it when it is imported
    return int(value)


def _check_app_inputs(args: argparse.Namespace) -> None:
    """Raise the errors ``run_app`` raises for bad weights or a digit index, without the UI."""
    from cnntui.data import load_sample, weights_data
    from cnntui.model import architecture_of, weights_from

    spec = args.weights or DEFAULT_WEIGHTS
    weights_from(spec, architecture_of(spec, args.arch), weights_data(args.data, args.image))
    if args.image is not None or args.index is not None:  # None: run_app picks one
        load_sample(args.data, args.index, args.image, args.label)


def _run_command(args: argparse.Namespace) -> int:
    if args.command == "bench" or (args.command == "train" and args.bench):
        from cnntui.reference_process import NO_TORCH, ReferenceUnavailable, torch_available

        if not torch_available():  # each side runs in its own process: say it once, here
            raise ReferenceUnavailable(f"{args.command} --bench cannot run here: {NO_TORCH}"
                                       if args.command == "train" else
                                       f"bench cannot run here: {NO_TORCH}")
    if args.command in ("trace", "verify"):
        from cnntui import report

        return report.main(args.command, report.Options.from_args(args))
    if args.command == "explain":
        from cnntui import explain_cli

        return explain_cli.main(args)
    if args.command == "bench":
        from cnntui import bench

        return bench.main(bench.BenchOptions.from_args(args))
    if args.command == "summary":
        from cnntui import summary

        return summary.main(args.arch, args.json)
    if args.command == "train":
        from cnntui import train_cli

        return train_cli.main(train_cli.TrainOptions.from_args(args))
    if args.command == "serve":
        app_args = _serve_app_args(args.app_args)
        from screens.serve import serve  # the UI side, imported only to serve it

        return serve(app_args, args.host, args.port, args.max_sessions)
    raise UserError(f"unknown command {args.command}")
