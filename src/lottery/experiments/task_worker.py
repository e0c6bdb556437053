"""One rank of a task trained by several processes (`task_processes.launch` starts it under torchrun):
`python -m lottery.experiments.task_worker --root STORE --experiment HASH --task NAME --runtime JSON`.
Errors are one line (`lottery: error: ...`) and exit code 2, as in the CLI."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

from lottery.errors import UserError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lottery.experiments.task_worker")
    parser.add_argument("--root", required=True)
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--task", required=True)
    parser.add_argument("--runtime", required=True)
    args = parser.parse_args(argv)
    try:
        from lottery.experiments.executors import context_for, run_job
        from lottery.experiments.plan import index, plan
        from lottery.experiments.task_processes import decode_runtime
        from lottery.spec import spec_hash
        from lottery.store import load_spec
        from lottery.training import distributed

        runtime = decode_runtime(args.runtime)
        if runtime.imports:
            from lottery.plugins import import_modules

            import_modules(runtime.imports)
        runtime = dataclasses.replace(runtime, device=distributed.setup(runtime.device))  # join the process group
        spec, _ = load_spec(Path(args.root) / args.experiment)
        if spec_hash(spec) != args.experiment:
            raise UserError(f"{args.root}/{args.experiment}: its spec.json does not hash to its name")
        tasks = index(plan(context_for(spec, runtime)))
        if args.task not in tasks:
            raise UserError(f"no task {args.task!r} in experiment {args.experiment}")
        run_job(spec, tasks[args.task], args.root, runtime)
    except UserError as error:
        message = str(error).replace("\r", "\\r").replace("\n", "\\n")  # one line
        print(f"lottery: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
