"""The `lottery` command. Bad input exits with code 2 and one line on stderr, never a traceback."""

from __future__ import annotations

import argparse
import gc
import signal
import sys
import textwrap
import threading
from collections.abc import Sequence
from pathlib import Path

from lottery.errors import UserError
from lottery.extension_points import control_kinds

SWITCH = {"auto": None, "on": True, "off": False}  # the values of the runtime's auto|on|off flags


def _epilog() -> str:
    from lottery.cli.docs import doc

    return (
        f"Docs: {doc('run-format.md')} (the store), {doc('api.md')} (Python). Exit codes: 0 ok; 1 verify found "
        "problems or a sweep task failed; 2 bad input or a failed write (nothing lost); 130/143 interrupted/terminated "
        "(the same command resumes)."
    )


EPILOG = _epilog()


class HelpFormatter(argparse.HelpFormatter):
    """argparse's, but a path or a name is never broken across lines (at a hyphen, or inside a long path)."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False, break_long_words=False)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return textwrap.fill(
            " ".join(text.split()),
            width,
            initial_indent=indent,
            subsequent_indent=indent,
            break_on_hyphens=False,
            break_long_words=False,
        )


class Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line and exit code 2 like every other bad input."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{message} (see '{self.prog} --help')")


def _experiment_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", nargs="?", type=Path, help='TOML spec file (may start with preset = "NAME")')
    p.add_argument("--preset", help="start from this preset (see 'lottery presets')")
    p.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import a plugin module first (a module name, or a path to a .py file) that registers models, datasets, "
        "losses, mask sources or control kinds the spec names (repeatable; see docs/extending.md)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="GROUP.FIELD=VALUE",
        help="override a setting; VALUE is TOML, or a bare string (repeatable)",
    )
    p.add_argument("--out", help="store root (default: $LOTTERY_RUNS or ./runs)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    p.add_argument(
        "--checkpoint-every", type=int, metavar="N", help="checkpoint every N iterations (default: every 2 minutes)"
    )
    p.add_argument(
        "--no-wait",
        dest="wait",
        action="store_false",
        help="exit with an error instead of waiting when another process holds the experiment",
    )
    p.add_argument(
        "--progress",
        choices=("auto", "bar", "log"),
        default="auto",
        help="progress bar (bar), log lines (log), or bar only on a terminal (auto)",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the training step (slow to start)")
    p.add_argument(
        "--data-workers",
        type=int,
        metavar="N",
        help="image folders: decoding processes (default: CPUs, up to 8; at most the CPUs this process may use)",
    )
    p.add_argument(
        "--log",
        metavar="TRACKERS",
        help="also log to experiment trackers, comma-separated: tensorboard, wandb, mlflow (default: $LOTTERY_LOG, "
        "else none; each needs its extra, e.g. pip install 'lottery[tensorboard]')",
    )
    p.add_argument(
        "--log-strict",
        action="store_true",
        help="a tracker that fails to start or to log stops the command (exit 2) instead of being turned off "
        "with a warning while the run goes on",
    )
    for flag, what in (
        ("--channels-last", "convnets in channels_last memory format (auto: on CUDA)"),
        (
            "--batch-copies",
            "train runs of one network that differ only in seeds, masks and start weights (stability copies, "
            "a level's controls, the replicates) together as one stacked model (auto: where measured faster)",
        ),
    ):
        p.add_argument(flag, choices=tuple(SWITCH), default="auto", help=what)


def _rewind_search_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--level", type=int, metavar="L", help="the IMP level whose stability point is searched (default: imp.levels)"
    )
    p.add_argument(
        "--max-trainings", type=int, metavar="N", help="train at most N networks, then report the bracket so far"
    )
    p.add_argument(
        "--grid",
        metavar="STEPS",
        help="candidate rewind points, comma-separated step strings (default: 0 and a doubling grid)",
    )
    p.add_argument(
        "--refine", type=int, default=2, metavar="N", help="bisection steps between the grid bracket's ends (default 2)"
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=0.2,
        metavar="POINTS",
        help="matching: within this many points of dense (default 0.2)",
    )
    p.add_argument(
        "--max-copies",
        type=int,
        metavar="N",
        help="copies per replicate an undecided probe may grow to (default 6, at least stability.copies)",
    )


def _dry_run_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="list the tasks the spec implies, with how many of their networks the store holds; train and write "
        "nothing",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="lottery", description="Find and study lottery tickets.", epilog=EPILOG)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("train", help="train the dense network of a spec (level 0)", epilog=EPILOG)
    _experiment_args(p)
    _dry_run_arg(p)
    p = sub.add_parser("run", help="run everything the spec describes (IMP levels, controls, ...)", epilog=EPILOG)
    _experiment_args(p)
    _dry_run_arg(p)
    p = sub.add_parser("sweep", help="run the grid of experiments a spec's [sweep] table spans", epilog=EPILOG)
    _experiment_args(p)
    p.add_argument(
        "--executor",
        choices=("local", "ray", "slurm"),
        default="local",
        help="local: in this process (default); ray: tasks on a Ray cluster; slurm: each task a Slurm job",
    )
    p.add_argument("--address", help="with --executor ray: join this Ray cluster (default: start a local one)")
    p.add_argument("--workers", type=int, metavar="N", help="with a local Ray instance: number of worker CPUs")
    p.add_argument(
        "--gpus-per-task",
        type=float,
        metavar="G",
        help="with --executor ray or slurm: GPUs per task (default: 1 per process on CUDA)",
    )
    p.add_argument(
        "--nproc-per-task",
        type=int,
        default=1,
        metavar="N",
        help="train each task with N data-parallel processes (torchrun; gloo on CPU, one GPU each on CUDA)",
    )
    p.add_argument("--partition", metavar="P", help="with --executor slurm: the partition (default: the cluster's)")
    p.add_argument(
        "--time",
        default="4:00:00",
        metavar="T",
        help="with --executor slurm: each job's time limit (minutes, HH:MM:SS or D-HH:MM:SS; default 4:00:00); "
        "a task that needs longer is requeued and resumes from its checkpoint",
    )
    p.add_argument("--cpus-per-task", type=int, metavar="C", help="with --executor slurm: CPUs of each job")
    p.add_argument("--mem", metavar="M", help="with --executor slurm: memory of each job (sbatch --mem, e.g. 32G)")
    p.add_argument("--account", metavar="A", help="with --executor slurm: the account to charge")
    p.add_argument(
        "--slurm",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="with --executor slurm: any other sbatch option, e.g. --slurm qos=high (repeatable)",
    )
    p.add_argument(
        "--status",
        action="store_true",
        help="report what each task of this sweep is doing (pending, running, done, failed) and exit",
    )
    p.add_argument("--retries", type=int, default=1, metavar="N", help="retries of a failing task (default 1)")
    p = sub.add_parser(
        "rewind-search", help="the earliest stable rewind point of the dense network and of an IMP level", epilog=EPILOG
    )
    _experiment_args(p)
    _rewind_search_args(p)
    p = sub.add_parser("presets", help="list the presets, or print one in full", epilog=EPILOG)
    p.add_argument("--show", metavar="NAME", help="print this preset's settings and sources")
    p = sub.add_parser(
        "show", help="summarise an experiment directory, or print a weights file's provenance", epilog=EPILOG
    )
    p.add_argument("run_dir", type=Path, metavar="PATH", help="an experiment directory or a .safetensors file")
    p = sub.add_parser("export", help="write a ticket or trained subnetwork for other code to load", epilog=EPILOG)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the experiment directory")
    p.add_argument("--level", type=int, required=True, metavar="L", help="the IMP level (0: the dense network)")
    controls = ", ".join(control_kinds)  # every registered control kind (plugins: with --import)
    p.add_argument("--kind", default="imp", help=f"imp (default), dense, or a control kind: {controls}")
    p.add_argument(
        "--what",
        choices=("ticket", "trained"),
        default="ticket",
        help="ticket: m ⊙ W_k and its mask (default); trained: the trained subnetwork",
    )
    p.add_argument(
        "--format",
        dest="fmt",
        choices=("safetensors", "torch-prune", "state-dict", "sparse", "compact"),
        default="safetensors",
        help="file format (default safetensors); sparse: kept values + bit mask or "
        "CSR; compact: a channel ticket as a smaller network (docs/export.md)",
    )
    p.add_argument(
        "--out",
        type=Path,
        help="output directory, new or empty, or an earlier export of the same ticket "
        "and format (default: ./<hash>_<run path>_<what>)",
    )
    p.add_argument("--rewind", type=int, metavar="K", help="rewind iteration (needed when there are several)")
    p.add_argument("--replicate", type=int, default=0, metavar="R", help="replicate (default 0)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="control seed (default 0)")
    p = sub.add_parser(
        "verify",
        help="check every artifact under a directory against its manifest, every link and every network's name",
        epilog=EPILOG,
    )
    p.add_argument("path", type=Path, help="an experiment directory or a whole store")
    p.add_argument(
        "--recompute",
        metavar="N|all",
        help="also retrain N sampled networks of the store (or all) from "
        "their recipes in a scratch directory and report any that are not bit-identical",
    )
    p.add_argument("--sample-seed", type=int, default=0, metavar="S", help="which networks --recompute samples")
    p = sub.add_parser("report", help="write the figures (PNG, SVG) and an HTML report of an experiment", epilog=EPILOG)
    p.add_argument("run_dir", type=Path)
    p = sub.add_parser("compare", help="overlay the figures of several experiments in one HTML report", epilog=EPILOG)
    p.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR", help="experiment directories")
    p.add_argument("--out", type=Path, default=Path("comparison"), help="output directory (default: ./comparison)")
    p.add_argument(
        "--label",
        dest="labels",
        action="append",
        metavar="NAME",
        help="legend name of each experiment, in order (repeat once per RUN_DIR; default: its differing settings)",
    )
    p = sub.add_parser("ls", help="list the experiments of a store: hash, settings, status, date", epilog=EPILOG)
    p.add_argument("store", type=Path, nargs="?", metavar="STORE", help="the store (default: $LOTTERY_RUNS or ./runs)")
    p = sub.add_parser(
        "rm", help="remove an experiment's view (spec, results, links); its networks stay until 'gc'", epilog=EPILOG
    )
    p.add_argument("experiment", type=Path, metavar="EXPERIMENT", help="the experiment directory")
    p = sub.add_parser("gc", help="remove the networks no experiment links to (try --dry-run first)", epilog=EPILOG)
    p.add_argument("store", type=Path, metavar="STORE", help="the store")
    p.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    return parser


class Terminated(BaseException):
    """SIGTERM (a scheduler pre-empting the job, `kill`): unwinds like Ctrl-C, so writes in flight end cleanly."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        args = build_parser().parse_args(argv)
        for name in ("channels_last", "batch_copies"):  # auto|on|off -> None|True|False for the runtime
            if isinstance(getattr(args, name, None), str):
                setattr(args, name, SWITCH[getattr(args, name)])
        if getattr(args, "imports", None):  # plugin models, datasets, losses: before the spec is resolved
            from lottery.plugins import import_modules

            args.imports = import_modules(args.imports)
        from lottery.cli import commands

        return getattr(commands, args.command.replace("-", "_"))(args)
    except UserError as error:
        message = str(error).replace("\r", "\\r").replace("\n", "\\n")  # one line, whatever names it quotes
        print(f"lottery: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lottery: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except Terminated:
        print("lottery: terminated (SIGTERM); run the same command again to resume", file=sys.stderr)
        return 128 + signal.SIGTERM
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def entry() -> int:
    """The `lottery` executable (the console script and `python -m lottery`): `main` in a process of its own.

    What the imports created (torch's and lottery's modules, ~10^5 objects) lives until the process exits: frozen
    (`gc.freeze`), the cyclic collector's later full passes, and the one at exit, skip it. With the pause while
    lottery imports (`lottery/startup.py`), ~0.7 s of CPU of a 10-second `lottery run` (docs/performance.md,
    "Fixed costs of a command"); the imports' own garbage (~7,000 objects) stays for the process's life. Only
    here: a process that calls `main` itself (a test, a notebook) keeps its collector as it was."""
    gc.freeze()
    return main()
