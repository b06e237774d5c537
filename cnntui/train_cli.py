"""``cnntui train``: the command line and its Rich output around ``training.Trainer``."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields, replace
from pathlib import Path

from rich.console import Console

from cnntui import model
from cnntui.data import load_dataset, weights_data
from cnntui.training import (
    BatchEnd,
    ConfigError,
    EpochEnd,
    Reset,
    TrainConfig,
    Trainer,
    TrainResult,
)
from cnntui.training.config import NUM_CLASSES
from cnntui.training.events import Event
from cnntui.training.torch_twin import bench_against_torch

# ---- the ``cnntui train`` command --------------------------------------------------------------


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """A TrainConfig from ``cnntui train``'s flags; flags left out keep the defaults."""
    changes = {name: getattr(args, name) for name in
               ("epochs", "lr", "optimizer", "batch_size", "seed", "dtype", "weight_decay",
                "schedule", "momentum") if getattr(args, name, None) is not None}
    if getattr(args, "no_augment", False):
        changes["augment"] = False
    config = replace(TrainConfig.for_data(getattr(args, "data", "digits")), **changes)
    config.validate()
    return config


@dataclass(frozen=True)
class TrainOptions:
    """What ``cnntui train`` is asked for, besides the run's TrainConfig."""

    config: TrainConfig
    weights: str = model.SEED  # start from
    arch: str | None = None
    data: str = "digits"
    out: str | None = None
    json: bool = False
    train_limit: int | None = None
    bench: bool = False
    bench_epochs: int = 3
    bench_threads: int | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TrainOptions:
        return cls(config=config_from_args(args),
                   **{f.name: getattr(args, f.name) for f in fields(cls)
                      if f.name != "config" and hasattr(args, f.name)})


def main(args: TrainOptions) -> int:
    """``cnntui train``: 0 when training finished, 1 when it diverged, 130 when stopped."""
    import json
    import signal
    import sys

    from cnntui.terminal import Console, finite_or_null

    config = args.config
    arch = model.architecture_of(args.weights, args.arch)
    if args.bench:
        if args.bench_epochs < 1 or (args.bench_threads is not None and args.bench_threads < 1):
            raise ConfigError("--bench-epochs and --bench-threads must be at least 1")
        report = bench_against_torch(config, epochs=args.bench_epochs,
                                     threads=args.bench_threads, arch=arch)
        return _print_bench(report, args.json, Console())
    params, _ = model.weights_from(args.weights, arch, weights_data(args.data, None))
    out = None if args.out is None else _check_writable(args.out)
    digits = load_dataset(args.data)
    train_idx = digits.train_idx
    if args.train_limit is not None:
        if args.train_limit < 1:
            raise ConfigError("--train-limit must be at least 1")
        train_idx = train_idx[:args.train_limit]
    trainer = Trainer(config, params=params, data=digits, train_idx=train_idx, arch=arch)
    # with --out, a reader going away (| head) must not cost the weights
    console = Console(stderr=args.json, highlight=False, keep_going=out is not None)

    def on_interrupt(signum: int, frame: object) -> None:
        if trainer.stopping:  # a second Ctrl-C: give up at once
            raise KeyboardInterrupt
        trainer.stop()
        console.print("[yellow]stopping after this batch (Ctrl-C again to quit at once)")

    batch_losses: list[float] = []  # for --json
    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        result = _run_with_progress(trainer, console, batch_losses)
    finally:
        signal.signal(signal.SIGINT, previous)

    saved, saved_epoch, note = None, None, ""
    if out is not None:
        if result.status == "finished":
            saved, saved_epoch = trainer.save(out), trainer.epoch
        elif trainer.epoch_params is not None:
            saved_epoch = trainer.epoch
            saved = trainer.save(out, trainer.epoch_params, epoch=saved_epoch)
            note = f" (the last complete epoch, {saved_epoch})"
            # the run stopped mid-epoch: report what the file holds, not the weights of then
            result = replace(result, evaluation=trainer.evaluate(trainer.epoch_params))
        else:
            note = f"; no epoch completed, so nothing was written to {out}"
    if args.json:
        doc = {"config": config.metadata(), **result.to_json(), "batch_losses": batch_losses,
               "saved": None if saved is None else str(saved), "saved_epoch": saved_epoch}
        print(json.dumps(finite_or_null(doc), indent=2, allow_nan=False))
    else:
        _print_summary(result, console, saved, saved_epoch, args.data)
    if saved is not None:
        console.print(f"saved the weights{note} to {saved}")
    elif note:
        console.print(note[2:])
    if result.status == "diverged":
        print(f"cnntui: {result.message}", file=sys.stderr)
        return 1
    return 130 if result.status == "cancelled" else 0


def _check_writable(out: str) -> Path:
    """Fail before training, not after it, when ``--out`` cannot be written; returns the path
    the weights will be saved to (``.npz`` added)."""
    import tempfile

    if not out.strip():
        raise ConfigError("--out needs a file name, such as --out weights.npz")
    path = model.npz_path(out)
    for p in (Path(out), path):  # the weights go to path, but a directory named out is a slip
        if p.is_dir():
            raise ConfigError(f"--out {p} is a directory; give a file name such as {p}/w.npz")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as e:
        raise ConfigError(f"cannot write --out {path}: {e.strerror or e}") from None
    return path


def _run_with_progress(trainer: Trainer, console: Console,
                       batch_losses: list[float]) -> TrainResult:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    cfg = trainer.config
    batches = -(-len(trainer.train_idx) // cfg.batch_size)
    header = f"{'epoch':>7} {'train loss':>10} {'train acc':>9} {'test loss':>9} " \
             f"{'test acc':>8} {'seconds':>7} {'img/s':>7}"
    augment = f"shifts up to {cfg.max_shift} px" if cfg.augment else "no augmentation"
    console.print(f"training {trainer.arch.name} on {len(trainer.train_idx)} digits, testing on "
                  f"{len(trainer.test_idx)}: {cfg.optimizer} lr {cfg.lr:g} ({cfg.schedule}), "
                  f"batch {cfg.batch_size}, {cfg.epochs} epochs, {augment}, "
                  f"{cfg.dtype}, seed {cfg.seed}")
    console.print(header, style="bold")
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[rate]}"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                  transient=True) as progress:
        task = progress.add_task("epoch 1", total=cfg.epochs * batches, loss="-", rate="")
        running = [0.0]

        def on_event(event: Event) -> None:
            if isinstance(event, BatchEnd):
                batch_losses.append(event.loss)
                running[0] = event.loss if event.step == 1 else 0.9 * running[0] + 0.1 * event.loss
                progress.update(task, completed=event.step, loss=f"{running[0]:.4f}",
                                description=f"epoch {event.epoch}/{event.epochs}",
                                rate=f"{event.images_per_s:,.0f} img/s")
            elif isinstance(event, EpochEnd):
                progress.console.print(
                    f"{event.epoch:>3}/{event.epochs:<3} {event.train_loss:>10.4f} "
                    f"{event.train_acc:>9.2%} {event.test_loss:>9.4f} {event.test_acc:>8.2%} "
                    f"{event.seconds:>7.2f} {event.images_per_s:>7,.0f}")
            elif isinstance(event, Reset):
                progress.update(task, completed=0)
                batch_losses.clear()

        return trainer.run(on_event)


def open_command(saved: Path | None, index: int | str = "N", data: str = "digits") -> str:
    """The command that opens digit ``index`` of ``data`` with the weights saved to ``saved``."""
    import shlex

    on = "" if data == "digits" else f" --data {shlex.quote(data)}"
    return f"cnntui --weights {shlex.quote(str(saved))}{on} --index {index}"


def _print_summary(result: TrainResult, console: Console, saved: Path | None = None,
                   saved_epoch: int | None = None, data: str = "digits") -> None:
    """The outcome; the confusion matrix and the misclassified digits once an epoch is done,
    of the weights saved to ``saved`` (after ``saved_epoch`` epochs) if they were saved."""
    from rich.table import Table

    from cnntui.terminal import glyph

    ev = result.evaluation
    if result.status == "finished":
        console.print(f"[green]{result.message}[/] in {result.seconds:.1f} s")
    elif result.status == "cancelled":
        console.print(f"[yellow]{result.message}")
    if ev is None or result.epochs_completed == 0:
        return
    scored = "" if saved_epoch is None or result.status == "finished" else \
        f", the saved weights of epoch {saved_epoch}"
    table = Table(title=f"confusion matrix: test accuracy {ev.accuracy:.2%} "
                        f"({int(ev.confusion.trace())}/{int(ev.confusion.sum())}){scored}",
                  caption="rows: true digit, columns: predicted", show_edge=False)
    table.add_column("", style="bold", justify="right")
    for c in range(NUM_CLASSES):
        table.add_column(str(c), justify="right")
    zero = f"[dim]{glyph('·', '.', console.file)}[/]"
    for r in range(NUM_CLASSES):
        table.add_row(str(r), *(
            (f"[bold green]{n}[/]" if r == c else f"[bold red]{n}[/]" if n else zero)
            for c, n in enumerate(ev.confusion[r])))
    console.print(table)
    wrong = [f"#{i} ({ev.labels[k]}->{ev.predicted[k]})" for k, i in enumerate(ev.indices)
             if ev.predicted[k] != ev.labels[k]]
    if wrong:
        more = f", and {len(wrong) - 24} more" if len(wrong) > 24 else ""
        console.print(f"misclassified test digits ({len(wrong)}): " + ", ".join(wrong[:24])
                      + more, markup=False)
        if saved is not None:
            console.print(f"open one with these weights: {open_command(saved, data=data)}",
                          markup=False)
        elif result.status == "finished":
            console.print("these weights were not saved; to open one of these digits with "
                          "them, train again with the same flags and --out FILE (a run gives "
                          "the same weights each time), then "
                          f"{open_command(Path('FILE'), data=data)}", markup=False)
        else:
            console.print("these weights were not saved (train with --out FILE to keep them)")


def _print_bench(report: dict[str, object], as_json: bool, console: Console) -> int:
    import json

    if as_json:
        print(json.dumps(report, indent=2))
        return 0
    console.print(f"training images/s, {report['optimizer']} batch {report['batch_size']} "
                  f"{report['dtype']}, {report['threads']} thread(s): {report['rounds']} "
                  f"alternating rounds of {report['epochs']} epochs, each in its own process")
    console.print(f"{'':16}{'median':>9} {'best':>9}")
    console.print(f"{'NumPy (cnntui)':16}{report['numpy_images_per_s']:>9,.0f} "
                  f"{report['numpy_best_images_per_s']:>9,.0f}")
    console.print(f"{'PyTorch CPU':16}{report['torch_images_per_s']:>9,.0f} "
                  f"{report['torch_best_images_per_s']:>9,.0f}")
    console.print(f"{'ratio':16}{report['ratio']:>8.2f}x {report['best_ratio']:>8.2f}x")
    return 0

