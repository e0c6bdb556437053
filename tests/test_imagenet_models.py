"""The ImageNet networks (torchvision's layouts and parameter counts), their presets, schedules and Ray GPUs."""

from __future__ import annotations

import math

import pytest
import torch

from lottery import models, prunable
from lottery.experiments.executors import task_options
from lottery.models.inception import InceptionV3
from lottery.presets import presets
from lottery.spec import ModelSpec, resolve
from lottery.training import Runtime
from lottery.training.schedule import lr_at


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# torchvision's reference models for 1000 classes (torchvision.models.*: sum of parameter numels)
COUNTS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "inception_v3": 23_834_568,
    "squeezenet1_1": 1_235_496,
}
# a parameter of each, name and shape as in torchvision's state dict
SHAPES = {
    "resnet50": ("layer4.2.conv3.weight", (2048, 512, 1, 1)),
    "resnet18": ("layer3.0.downsample.0.weight", (256, 128, 1, 1)),
    "inception_v3": ("Mixed_7c.branch3x3dbl_3b.conv.weight", (384, 384, 3, 1)),
    "squeezenet1_1": ("features.12.expand3x3.weight", (256, 64, 3, 3)),
}


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_parameter_counts_and_torchvision_names(name: str) -> None:
    size = 299 if name == "inception_v3" else 224
    model = models.build(ModelSpec(name=name), (3, size, size), 1000, 0)
    assert count(model) == COUNTS[name]
    if name in SHAPES:
        key, shape = SHAPES[name]
        assert tuple(model.state_dict()[key].shape) == shape
    kinds = prunable(model)
    assert list(kinds.values()).count("output") == 1 and "bn" not in " ".join(kinds)


def test_inception_with_auxiliary_head_is_the_papers_27_1m() -> None:
    assert count(InceptionV3(aux_logits=True)) == 27_161_264


@pytest.mark.parametrize(
    ("name", "size"), [("resnet18", 32), ("resnet50", 32), ("inception_v3", 75), ("squeezenet1_1", 48)]
)
def test_forward_backward_at_small_resolution(name: str, size: int) -> None:
    model = models.build(ModelSpec(name=name), (3, size, size), 5, 0)
    x, y = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0)), torch.tensor([1, 4])
    logits = model(x)
    assert logits.shape == (2, 5)
    torch.nn.functional.cross_entropy(logits, y).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_presets_resolve_with_sources() -> None:
    for name, model, density in (
        ("resnet50_imagenet", "resnet50", 0.3),
        ("inception_v3_imagenet", "inception_v3", 0.3),
        ("squeezenet_imagenet", "squeezenet1_1", 0.5),
    ):
        spec, _ = resolve(preset=name)
        assert spec.model.name == model and spec.imp.one_shot_density == density
        assert spec.dataset.name == "imagenet" and spec.training.batch_size == 1024
        assert "output" in spec.pruning.layers_to_ignore and all(r.endswith("ep") for r in spec.imp.rewind[1:])
        assert "arXiv" in presets.get(name).description
    r50, _ = resolve(preset="resnet50_imagenet")
    assert (r50.training.lr, r50.training.warmup_steps, r50.training.training_steps) == (0.4, "5ep", "90ep")
    assert r50.training.milestone_steps == ("30ep", "60ep", "80ep")


def test_linear_and_exponential_decay() -> None:
    assert lr_at(0, 0.03, 0, [], 0.1, "linear", 100, 0.005) == pytest.approx(0.03)
    assert lr_at(50, 0.03, 0, [], 0.1, "linear", 100, 0.005) == pytest.approx(0.0175)
    assert lr_at(100, 0.03, 0, [], 0.1, "linear", 100, 0.005) == pytest.approx(0.005)
    assert lr_at(50, 0.66, 0, [], 0.1, "exponential", 100, 6.6e-5) == pytest.approx(0.0066)
    assert lr_at(4, 0.66, 10, [], 0.1, "exponential", 110, 6.6e-5) == pytest.approx(0.066 * 5 / 1)  # warmup
    assert lr_at(60, 0.66, 10, [], 0.1, "exponential", 110, 6.6e-5) == pytest.approx(0.0066)
    assert math.isclose(lr_at(7, 0.1, 0, [5], 0.1), 0.01)  # the step schedule is unchanged


def test_ray_tasks_hold_a_gpu_on_cuda() -> None:
    assert task_options(Runtime(device=torch.device("cuda")), 2) == {
        "max_retries": 2,
        "retry_exceptions": True,
        "num_gpus": 1,
    }
    assert "num_gpus" not in task_options(Runtime(), 0)
    assert task_options(Runtime(gpus_per_task=0.5), 0)["num_gpus"] == 0.5


def test_gpus_per_task_reaches_the_ray_executor(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    from lottery.cli.main import main
    from lottery.experiments import executors

    seen = {}

    def fake_run_ray(jobs, root, runtime, *args):  # noqa: ANN001, ANN002, ANN202
        seen["options"] = task_options(runtime, 0)
        return executors.Outcome()

    monkeypatch.setattr(executors, "run_ray", fake_run_ray)
    spec = tmp_path / "sweep.toml"
    spec.write_text(
        '[dataset]\nname = "synthetic"\nvalidation_size = 200\n[model]\nname = "lenet_20_10"\n'
        '[training]\nbatch_size = 50\ntraining_steps = "2it"\n[sweep]\n"training.lr" = [0.1]\n'
    )
    argv = ["sweep", str(spec), "--out", str(tmp_path / "runs"), "--executor", "ray", "--gpus-per-task", "1"]
    main([*argv, "--device", "cpu"])
    assert seen["options"]["num_gpus"] == 1
