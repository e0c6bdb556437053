"""One function per subcommand; each returns the exit code."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import tomli_w
import torch

from lottery.errors import UserError


def _runtime(args: argparse.Namespace):  # noqa: ANN202
    from lottery import collective, loggers
    from lottery.training import Runtime, distributed

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except (RuntimeError, ValueError):
        raise UserError(f"--device {args.device!r} is not a device (allowed: auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available (allowed here: cpu, auto)")
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"--device {args.device!r}: allowed are auto, cpu, cuda, cuda:N")
    if args.checkpoint_every is not None and args.checkpoint_every < 1:
        raise UserError("--checkpoint-every must be at least 1 iteration")
    progress = {"auto": None, "bar": True, "log": False}[args.progress]
    device = distributed.setup(device)  # under torchrun: join the process group (gloo on CPU, nccl on CUDA)
    if not collective.is_main():
        progress = False  # progress and log lines from rank 0 only
    return Runtime(
        device=device,
        checkpoint_every=args.checkpoint_every,
        progress=progress,
        compile=args.compile,
        channels_last=args.channels_last,
        batch_copies=args.batch_copies,
        log=loggers.parse(args.log if args.log is not None else os.environ.get("LOTTERY_LOG")),
        log_strict=args.log_strict,
        imports=tuple(args.imports),
        data_workers=_data_workers(args),
        gpus_per_task=_gpus_per_task(args),
    )


def _gpus_per_task(args: argparse.Namespace) -> float | None:
    gpus = getattr(args, "gpus_per_task", None)
    if gpus is not None and gpus < 0:
        raise UserError(f"--gpus-per-task must be >= 0, got {gpus}")
    return gpus


def _slurm_options(args: argparse.Namespace):  # noqa: ANN202
    from lottery.experiments.slurm import SlurmOptions, parse_extra, parse_time

    gpus = args.gpus_per_task
    if gpus is not None and gpus != int(gpus):
        raise UserError(f"--gpus-per-task {gpus:g}: Slurm allocates whole GPUs (allowed: 0, 1, 2, ...)")
    if args.cpus_per_task is not None and args.cpus_per_task < 1:
        raise UserError(f"--cpus-per-task must be >= 1, got {args.cpus_per_task}")
    return SlurmOptions(
        partition=args.partition,
        time_minutes=parse_time(args.time),
        gpus_per_task=None if gpus is None else int(gpus),
        cpus_per_task=args.cpus_per_task,
        mem=args.mem,
        account=args.account,
        extra=parse_extra(args.slurm),
    )


def _data_workers(args: argparse.Namespace) -> int | None:
    workers = getattr(args, "data_workers", None)
    if workers is not None and workers < 0:
        raise UserError(f"--data-workers must be >= 0, got {workers}")
    return workers


def _experiment(args: argparse.Namespace, dense_only: bool) -> int:
    from lottery import collective
    from lottery.experiments.run import run_experiment
    from lottery.results.rows import table
    from lottery.spec import resolve
    from lottery.store import experiment_dir, store_root
    from lottery.training import overall

    if args.spec is None and args.preset is None and not args.overrides:
        raise UserError("give a spec file, --preset NAME or --set overrides (see 'lottery presets')")
    spec, preset = resolve(args.spec, args.preset, args.overrides)
    root = store_root(args.out)
    if args.dry_run:
        from lottery.experiments.driver import dry_run

        print("\n".join(dry_run(spec, preset, root, _runtime(args), dense_only)))
        return 0
    with overall.tracking(experiment_dir(root, spec).path):  # "network i of N", elapsed, ETA on the bar and in logs
        experiment, results = run_experiment(spec, preset, root, _runtime(args), dense_only, args.wait)
    if collective.is_main():  # under torchrun the table and the run directory are printed once
        print(table(results["summary"]))
        print(experiment.path)
    return 0


def train(args: argparse.Namespace) -> int:
    return _experiment(args, dense_only=True)


def run(args: argparse.Namespace) -> int:
    return _experiment(args, dense_only=False)


def rewind_search(args: argparse.Namespace) -> int:
    from lottery.experiments.rewind_search import run_search
    from lottery.results.probes import table
    from lottery.spec import resolve
    from lottery.spec.parse import read_toml
    from lottery.store import store_root

    if args.spec is None and args.preset is None and not args.overrides:
        raise UserError("give a spec file, --preset NAME or --set overrides (see 'lottery presets')")
    grid = [s.strip() for s in args.grid.split(",") if s.strip()] if args.grid else None
    if args.spec is not None and "sweep" in read_toml(args.spec):  # one search per point of the sweep's grid
        from lottery.experiments.sweep import expand

        points = expand(args.spec, args.preset, args.overrides)
    else:
        spec, preset = resolve(args.spec, args.preset, args.overrides)
        points = [(spec, preset, None)]
    runtime = _runtime(args)
    done = []
    for spec, preset, point in points:
        experiment, found = run_search(
            spec,
            preset,
            store_root(args.out),
            runtime,
            args.level,
            args.max_trainings,
            grid,
            args.refine,
            args.tolerance,
            args.wait,
            args.max_copies,
        )
        print(table(found) if point is None else f"{_settings(point)}\n{table(found)}\n")
        done.append((experiment, point))
    for experiment, point in done[:-1]:
        print(f"{experiment.path}  {_settings(point)}")
    print(done[-1][0].path)  # the last line: the (last) experiment directory
    return 0


def _settings(point: dict | None) -> str:
    return " ".join(f"{k}={v}" for k, v in (point or {}).items())


def presets(args: argparse.Namespace) -> int:
    from lottery.presets import presets as registry

    if args.show is not None:
        preset = registry.get(args.show)
        print(f"# {preset.name}: {preset.description}\n")
        print(tomli_w.dumps(preset.settings), end="")
        return 0
    width = max(map(len, registry), default=0)
    for name in registry:
        preset = registry.get(name)
        t = preset.settings.get("training", {})
        m = preset.settings.get("model", {})
        d = preset.settings.get("dataset", {}).get("name", "fashion_mnist")
        summary = (
            f"{m.get('name', '?')} on {d}: {t.get('optimizer', 'sgd')} lr {t.get('lr', 0.1)}, "
            f"batch {t.get('batch_size', 128)}, {t.get('training_steps', '1ep')}"
        )
        print(f"{name:{width}s} {summary}")
    print("\n'lottery presets --show NAME' prints one in full.")
    from lottery.cli.docs import doc

    print(
        f"Your own models, datasets, losses, measures, mask sources, controls: 'lottery run --import MODULE spec.toml' "
        f"({doc('extending.md')})."
    )
    return 0


def show(args: argparse.Namespace) -> int:
    from lottery.experiments.run import collect
    from lottery.results.rows import aggregate, table
    from lottery.spec import to_dict
    from lottery.store import RunDir, load_spec

    if args.run_dir.is_file():
        return show_file(args.run_dir)
    spec, preset = load_spec(args.run_dir)
    experiment = RunDir(args.run_dir)
    print(f"experiment {args.run_dir}" + (f" (preset {preset})" if preset else ""))
    print(tomli_w.dumps(to_dict(spec, omit_defaults=True)), end="")
    rows = collect(experiment, spec)
    print(f"\n{len(rows)} finished training run(s)")
    if rows:  # read only: writing results.json here would race with a `lottery run` holding the lock
        print(table(aggregate(rows)))
    return 0


def show_file(path: Path) -> int:
    """A safetensors file's provenance (its metadata) and its tensors."""
    from safetensors import safe_open

    from lottery.store.provenance import read_metadata

    metadata = read_metadata(path)
    print(f"{path}")
    width = max((len(key) for key in metadata), default=0)
    for key, value in sorted(metadata.items()):
        print(f"  {key:{width}s}  {value}")
    if not metadata:
        print("  (no metadata)")
    with safe_open(str(path), framework="pt") as f:
        names = list(f.keys())
        print(f"{len(names)} tensor(s):")
        for name in names:
            piece = f.get_slice(name)
            print(f"  {name}  {piece.get_dtype()} {list(piece.get_shape())}")
    return 0


def export(args: argparse.Namespace) -> int:
    from lottery.export import export_ticket

    out = export_ticket(
        args.run_dir, args.level, args.kind, args.what, args.fmt, args.out, args.rewind, args.replicate, args.seed
    )
    sizes = json.loads((out / "export.json").read_text())["sizes"]
    print(
        f"{out / 'README.md'}: {args.fmt} export of {sizes['export_bytes']:,} bytes, "
        f"{sizes['export_bytes'] / sizes['dense_bytes']:.1%} of the dense file ({sizes['dense_bytes']:,} bytes)",
        file=sys.stderr,
    )
    print(out)
    return 0


def verify(args: argparse.Namespace) -> int:
    from lottery.store import RunDir, audit, layout
    from lottery.store.groups import group_problems
    from lottery.store.run_dir import MANIFEST, missing_manifests

    if not args.path.is_dir():
        raise UserError(f"{args.path} is not a directory")
    recompute_count = None
    if getattr(args, "recompute", None) is not None:  # bad input is refused before anything is checked
        from lottery.experiments.recompute import parse_count

        recompute_count = parse_count(args.recompute)
        if not (args.path / layout.NETWORKS).is_dir():
            raise UserError(f"--recompute needs a store (a directory holding {layout.NETWORKS}/), got {args.path}")
    checked = bad = 0
    for path, problem in audit.problems(args.path):  # links (dangling, foreign), runs.json, networks' key.json
        bad += 1
        print(f"{path}: {problem}")
    for manifest in layout.walk(args.path, MANIFEST):  # through the run links into networks/, and no other link
        run = RunDir(manifest.parent)
        entries = run.manifest()
        checked += len(entries)
        for name, problem in run.verify():
            bad += 1
            print(f"{run.path / name}: {problem}")
    for directory, count in missing_manifests(args.path):
        bad += 1
        print(f"{directory / MANIFEST}: missing (the {count} artifact(s) here are untrusted and will be recomputed)")
    for path, problem in group_problems(args.path):
        bad += 1
        print(f"{path}: {problem}")
    print(f"{checked} artifacts checked, {bad} problem(s)")
    if getattr(args, "recompute", None) is not None:
        from lottery.experiments.recompute import recompute

        done, problems = recompute(args.path, recompute_count, args.sample_seed)
        for problem in problems:
            print(problem)
        print(f"{done} network(s) recomputed from their recipes, {len(problems)} not bit-identical or not recomputable")
        bad += len(problems)
    return 1 if bad else 0


def report(args: argparse.Namespace) -> int:
    from lottery.reports import write_report

    path = write_report(Path(args.run_dir))
    print(path, file=sys.stderr)
    print(path.parent)
    return 0


def compare(args: argparse.Namespace) -> int:
    from lottery.reports import write_comparison

    path = write_comparison(list(args.run_dirs), Path(args.out), args.labels)
    print(path, file=sys.stderr)
    print(path.parent)
    return 0


def sweep(args: argparse.Namespace) -> int:
    from lottery.experiments.sweep import run_sweep, status
    from lottery.store import store_root

    if args.spec is None:
        raise UserError("lottery sweep needs a spec file (with a [sweep] table for a grid of experiments)")
    if args.status:
        states = status(args.spec, args.preset, args.overrides, store_root(args.out))
        from lottery.experiments.sweep_status import summary

        print(summary(states))
        for task in states:
            print(f"{task.state:8} {task.key}" + (f"  {task.detail}" if task.detail else ""))
        return 0
    if args.retries < 0 or (args.workers is not None and args.workers < 1) or args.nproc_per_task < 1:
        raise UserError("--retries must be >= 0, --workers >= 1 and --nproc-per-task >= 1")
    slurm = _slurm_options(args) if args.executor == "slurm" else None
    finished, outcome = run_sweep(
        args.spec,
        args.preset,
        args.overrides,
        store_root(args.out),
        _runtime(args),
        args.executor,
        args.address,
        args.workers,
        args.retries,
        args.wait,
        args.nproc_per_task,
        slurm,
    )
    total = len(outcome.done) + len(outcome.failed) + len(outcome.skipped)
    print(f"{len(outcome.done)}/{total} tasks done, {len(outcome.failed)} failed, {len(outcome.skipped)} skipped")
    for key, error in outcome.failed.items():
        print(f"failed: {key}: {error}")
    for key, cause in outcome.skipped.items():
        print(f"skipped: {key} (depends on failed {cause})")
    for experiment, point in finished:
        settings = " ".join(f"{k}={v}" for k, v in point.items())
        print(f"{experiment.path}  {settings}")
    return 1 if outcome.failed else 0


def ls(args: argparse.Namespace) -> int:
    from lottery.cli.manage import list_store
    from lottery.store import store_root

    store = args.store if args.store is not None else store_root(None)
    rows = list_store(Path(store))
    for row in rows:
        print(f"{row.hash}  {row.status}  {row.date}  {row.settings}")
    print(f"{len(rows)} experiment(s) in {store}", file=sys.stderr)
    return 0


def rm(args: argparse.Namespace) -> int:
    from lottery.cli.manage import remove_experiment

    links = remove_experiment(args.experiment)
    print(
        f"removed {args.experiment} ({links} run link(s); the networks stay in the store: "
        f"'lottery gc {args.experiment.parent}' removes those no experiment links to)"
    )
    return 0


def gc(args: argparse.Namespace) -> int:
    from lottery.cli.manage import collect_garbage

    done = collect_garbage(args.store, args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for network in done.removed:
        print(f"{verb} {network}")
    for network in done.held:
        why = (
            "its .lock is a link, which a store never holds: remove it"
            if (network / ".lock").is_symlink()
            else ("a running process holds its lock")
        )
        print(f"kept {network} (unlinked, but {why})")
    size = f"{done.bytes / 2**20:.1f} MiB" if done.bytes >= 2**20 else f"{done.bytes / 2**10:.1f} KiB"
    print(f"total: {verb} {len(done.removed)} network(s), {size}; {len(done.held)} kept: locked")
    return 0
