"""A whole `lottery run` against a plain PyTorch script doing the same work: wall, CPU and peak memory, interleaved.

Each side is a fresh process (a fresh store and output folder each time, so nothing is reused); the two alternate
A B / B A over --repeats rounds. Per process: wall-clock time, CPU time (user + system) and peak resident memory,
from `os.wait4` (the child's own rusage: `ru_maxrss` is the peak RSS of the process and of the children it waited
for). Ratios are lottery / plain of the medians; the spread is the range of the per-round ratios. Then one more
`lottery run`, instrumented in-process, says where its time and memory go (import, data, store, evaluation, the
rest: training), beside the plain script's own phase timings.

Workloads (the plain side is benchmarks/whole_run_plain.py: no `lottery` import, same data split and
normalisation, same data order, same pruning rule, saves start/mask/final/metrics per network):
- `imp2`: 2-level IMP (imp.levels = 2 after the dense network) on LeNet-300-100 / Fashion-MNIST, SGD 0.1, batch
  128, global magnitude 20%, 2 epochs per level, validation and test evaluation every epoch.
- `demo`: examples/demo.toml (lenet_300_100 preset: Adam 1.2e-3, batch 60, layerwise 20% / output 10%, 2 epochs,
  10 levels, rewind 100 it, 2 replicates, random_reinit and random_prune controls, evaluation every 100 it); the
  plain script trains its 62 networks one after another. `--quick` shortens it to 2 levels of 1 epoch (14
  networks) and runs one round.

    python benchmarks/whole_run.py                        # both workloads, 3 rounds (the demo: long)
    python benchmarks/whole_run.py --workload imp2
    python benchmarks/whole_run.py --workload demo --quick
    python benchmarks/whole_run.py --device cuda          # both sides on CUDA (benchmarks/gpu.sh)
    python benchmarks/whole_run.py --smoke                # a tiny check that it runs (no figures)

lottery's sources are byte-compiled first (`compileall` into src/lottery/**/__pycache__, what `pip install` and
any first import do), so that each start reads bytecode, as an installed lottery's does: where
PYTHONDONTWRITEBYTECODE is set (this sandbox sets it) and nothing compiled them, every `lottery` process compiles
its ~150 modules again (~0.1 s of CPU here), a cost no installed lottery pays (torch's bytecode is installed).
`--bytecode as-is` measures whatever is there instead.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
DEMO = HERE.parent / "examples" / "demo.toml"

WORKLOADS = {
    "imp2": {
        "lottery": [
            "--set",
            "training.training_steps=2ep",
            "--set",
            "training.eval_every=1ep",
            "--set",
            "imp.levels=2",
        ],
        "plain": [
            "--optimizer",
            "sgd",
            "--lr",
            "0.1",
            "--batch",
            "128",
            "--epochs",
            "2",
            "--levels",
            "2",
            "--eval-every",
            "epoch",
            "--strategy",
            "global",
        ],
    },
    "demo": {
        "lottery": [str(DEMO)],
        "plain": [
            "--optimizer",
            "adam",
            "--lr",
            "1.2e-3",
            "--batch",
            "60",
            "--epochs",
            "2",
            "--levels",
            "10",
            "--eval-every",
            "100",
            "--strategy",
            "layerwise",
            "--fraction",
            "0.2",
            "--output-fraction",
            "0.1",
            "--rewind",
            "100",
            "--init",
            "glorot_normal",
            "--replicates",
            "2",
            "--controls",
            "random_reinit,random_prune",
        ],
    },
}
QUICK_DEMO = {
    "lottery": ["--set", "imp.levels=2", "--set", "training.training_steps=1ep"],
    "plain": ["--levels", "2", "--epochs", "1"],
}
SMOKE = {  # --smoke: a check that every part runs (7,680 training examples: the demo's rewind point 100 it lies
    # within one epoch of batch 60), not a measurement
    "lottery": ["--set", "dataset.subset=7680"],
    "plain": ["--subset", "7680"],
}

# Run inside the instrumented `lottery run`: phase times and RSS, printed as one JSON line on stderr at exit.
PROFILE = r"""
import atexit, json, resource, sys, time
began = time.perf_counter()
def rss(key="VmRSS"):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
import lottery.cli.main as cli
import lottery.data, lottery.data.fingerprint, lottery.training.distributed as distributed
from lottery.store.run_dir import RunDir
phases = {"import": time.perf_counter() - began, "data": 0.0, "data fingerprint": 0.0, "store": 0.0,
          "evaluation": 0.0}
memory = {"after import": rss()}
raised = {}  # phase -> MiB by which the process's peak (VmHWM) rose during that phase's calls
depth = [0]
def timed(owner, name, phase, after=None):
    original = getattr(owner, name)
    def wrapper(*args, **kwargs):
        depth[0] += 1
        start, peak = time.perf_counter(), rss("VmHWM")
        try:
            return original(*args, **kwargs)
        finally:
            depth[0] -= 1
            if depth[0] == 0 or phase != "store":
                phases[phase] += time.perf_counter() - start
                raised[phase] = raised.get(phase, 0.0) + rss("VmHWM") - peak
            if after:
                after()
    setattr(owner, name, wrapper)
def after_data():
    memory.setdefault("after data (current)", rss())
    memory.setdefault("peak after data", rss("VmHWM"))
timed(lottery.data, "load", "data", after_data)
timed(lottery.data.fingerprint, "fingerprint", "data fingerprint")
timed(distributed, "evaluate_split", "evaluation")
for name in ("write", "write_tensors", "write_json", "write_torch", "read", "read_tensors", "read_json", "read_torch"):
    timed(RunDir, name, "store")
def report():
    total = time.perf_counter() - began
    phases["rest (training, pruning, planning)"] = total - sum(phases.values())
    phases["total"] = total
    memory["peak"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for phase, mib in raised.items():
        memory[f"peak raised in {phase}"] = mib
    memory["peak raised elsewhere (training, pruning)"] = memory["peak"] - memory["after import"] - sum(raised.values())
    import torch
    if torch.cuda.is_available():
        memory["cuda peak allocated"] = torch.cuda.max_memory_allocated() / 2**20
    sys.stderr.write("PROFILE " + json.dumps({"phases_s": phases, "rss_mib": memory}) + "\n")
atexit.register(report)
sys.argv = ["lottery", *sys.argv[1:]]
code = cli.entry()  # what `python -m lottery` runs (the process's collector as the executable sets it)
sys.exit(code)
"""


def run(command: list[str], env: dict[str, str]) -> dict[str, float | str]:
    """Wall, CPU (user + system) seconds and peak RSS (MiB) of one child process; its stderr tail."""
    with tempfile.TemporaryFile() as err:
        began = time.perf_counter()
        child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
        out = child.stdout.read() if child.stdout else ""
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - began
        err.seek(0)
        errors = err.read().decode(errors="replace")
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited with {child.returncode}:\n{errors[-3000:]}")
    return {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "rss": usage.ru_maxrss / 1024,
        "out": out,
        "err": errors,
    }


def commands(
    workload: str, quick: bool, out: Path, device: str, extra: list[str], smoke: bool = False
) -> dict[str, list[str]]:
    args = {side: list(WORKLOADS[workload][side]) for side in ("lottery", "plain")}
    for side in args:
        args[side] += (QUICK_DEMO[side] if quick and workload == "demo" else []) + (SMOKE[side] if smoke else [])
    python = sys.executable
    return {
        "lottery": [
            python,
            "-m",
            "lottery",
            "run",
            "--out",
            str(out / "runs"),
            "--progress",
            "log",
            "--device",
            device,
            *extra,
            *args["lottery"],
        ],
        "plain": [
            python,
            str(HERE / "whole_run_plain.py"),
            "--out",
            str(out / "plain"),
            "--device",
            device,
            *args["plain"],
        ],
    }


def spread(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}" if len(values) > 1 else "one round"


def measure(workload: str, args: argparse.Namespace, env: dict[str, str]) -> None:
    quick = (args.quick or args.smoke) and workload == "demo"
    rounds = 1 if quick or args.smoke else args.repeats
    extra = args.lottery_args.split() if args.lottery_args else []
    results: dict[str, list[dict]] = {"lottery": [], "plain": []}
    for round_ in range(rounds):
        order = ["lottery", "plain"] if round_ % 2 == 0 else ["plain", "lottery"]
        for side in order:
            with tempfile.TemporaryDirectory(prefix="whole_run_") as tmp:
                command = commands(workload, quick, Path(tmp), args.device, extra, args.smoke)[side]
                results[side].append(run(command, env))
            r = results[side][-1]
            print(
                f"  round {round_ + 1} {side:7s} wall {r['wall']:7.2f} s  CPU {r['cpu']:7.2f} s  "
                f"peak RSS {r['rss']:6.0f} MiB",
                flush=True,
            )
    shortened = " (--smoke)" if args.smoke else " (--quick)" if quick else ""
    title = f"{workload}{shortened} on {args.device}: lottery run / plain PyTorch script, {rounds} round(s)"
    print(f"{title}, medians (ratio range over rounds):")
    for key, label, unit in (("wall", "wall", "s"), ("cpu", "CPU", "s"), ("rss", "peak RSS", "MiB")):
        mine = [float(r[key]) for r in results["lottery"]]
        plain = [float(r[key]) for r in results["plain"]]
        ratios = [a / b for a, b in zip(mine, plain, strict=True)]
        a, b = statistics.median(mine), statistics.median(plain)
        print(f"  {label:9s} lottery {a:8.2f} {unit:3s} plain {b:8.2f} {unit:3s} ratio {a / b:.3f} ({spread(ratios)})")
    plain_profile = json.loads(results["plain"][-1]["out"].strip().splitlines()[-1])
    with tempfile.TemporaryDirectory(prefix="whole_run_") as tmp:
        command = commands(workload, quick, Path(tmp), args.device, extra, args.smoke)["lottery"]
        profiled = run([sys.executable, "-c", PROFILE, *command[command.index("run") :]], env)
    mine = json.loads(next(line for line in str(profiled["err"]).splitlines() if line.startswith("PROFILE "))[8:])
    print("  where the time goes (one instrumented lottery run; the plain script's last run):")
    for name, seconds in mine["phases_s"].items():
        print(f"    lottery {name:36s} {seconds:7.2f} s")
    for name, seconds in plain_profile["phases_s"].items():
        print(f"    plain   {name:36s} {seconds:7.2f} s")
    work = plain_profile["work"]
    flops = work_flops(work["steps"], work["batch"], work["evaluated_examples"])
    peak = matmul_peak()
    print(
        f"  achieved FLOP/s: {work['steps']} training steps of batch {work['batch']} and "
        f"{work['evaluated_examples']} evaluated examples = {flops / 1e12:.2f} TFLOP (LeNet-300-100, "
        f"torch.utils.flop_counter); fp32 matmul peak (2048^3) {peak / 1e9:.1f} GFLOP/s per CPU second"
    )
    for side in ("lottery", "plain"):
        cpu = statistics.median([float(r["cpu"]) for r in results[side]])
        wall = statistics.median([float(r["wall"]) for r in results[side]])
        print(
            f"    {side:7s} {flops / cpu / 1e9:6.1f} GFLOP/s per CPU second ({flops / cpu / peak:.0%} of peak), "
            f"{flops / wall / 1e9:6.1f} GFLOP/s of wall time"
        )
    print("  where the memory goes (RSS, MiB):")
    print("    lottery " + ", ".join(f"{k} {v:.0f}" for k, v in mine["rss_mib"].items()))
    print("    plain   " + ", ".join(f"{k} {v:.0f}" for k, v in plain_profile["rss_mib"].items()))


def work_flops(steps: int, batch: int, evaluated: int) -> float:
    """FLOPs of `steps` LeNet-300-100 training steps (forward + backward) of `batch` examples and of `evaluated`
    forward passes (torch.utils.flop_counter: matmuls, 2 per multiply-add; the pruned weights still multiplied)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from lottery.models.lenet import LeNet

    model = LeNet((1, 28, 28), 10)
    x, y = torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
    with FlopCounterMode(display=False) as train:
        torch.nn.functional.cross_entropy(model(x), y).backward()
    with FlopCounterMode(display=False) as forward, torch.inference_mode():
        model(x[:1])
    return steps * train.get_total_flops() + evaluated * forward.get_total_flops()


def matmul_peak(n: int = 2048, repeats: int = 7) -> float:
    """FLOPs per CPU second of an n^3 fp32 matmul (median; CPU time, as the achieved figures: on a loaded machine
    wall-clock time measures the other processes too)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    seconds = []
    for _ in range(repeats):
        began = time.process_time()
        torch.mm(a, b)
        seconds.append(time.process_time() - began)
    return 2 * n**3 / statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=("imp2", "demo", "both"), default="both")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--quick", action="store_true", help="the demo shortened to 2 levels of 1 epoch, one round")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="OMP_NUM_THREADS of both processes (default 1: ratios robust on a shared machine; "
        "0: torch's default, all cores)",
    )
    parser.add_argument("--smoke", action="store_true", help="small (7,680 examples, one round): checks it runs")
    parser.add_argument("--device", default="cpu", help="the device of both sides (cpu, cuda)")
    parser.add_argument(
        "--bytecode",
        choices=("compile", "as-is"),
        default="compile",
        help="compile: byte-compile lottery's sources first, as an install does (default); as-is: leave them",
    )
    parser.add_argument("--lottery-args", default="", help="extra `lottery run` options, e.g. '--batch-copies off'")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOTTERY_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH", "")) if p)
    if args.threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.threads)
        import torch

        torch.set_num_threads(args.threads)  # the matmul peak with the children's threads
    _common.header("a whole lottery run vs a plain PyTorch script")
    if args.bytecode == "compile" and not compileall.compile_dir(SRC / "lottery", quiet=1):
        raise SystemExit(f"could not byte-compile {SRC / 'lottery'}")
    cached = any((SRC / "lottery").glob("__pycache__/__init__.*.pyc"))
    print(
        f"lottery's bytecode: {'compiled first' if args.bytecode == 'compile' else 'as found'} "
        f"({'cached' if cached else 'none cached: compiled at every start'}); "
        f"PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r}"
    )
    load = os.getloadavg()
    print(f"threads per process: {args.threads or 'torch default'}; load average at start {load[0]:.1f}")
    for workload in ("imp2", "demo") if args.workload == "both" else (args.workload,):
        measure(workload, args, env)
    print(f"load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
