"""A tiny LightningModule and data for the Lightning integration tests (also run under torchrun by the DDP test)."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

TOTAL = 12  # iterations T: the LR schedule is defined over T, not over trainer.max_steps
QUIET = {"accelerator": "cpu", "enable_progress_bar": False, "enable_model_summary": False}
QUIET["enable_checkpointing"] = False  # nothing written to the working directory


class Tiny(pl.LightningModule):
    """Linear - ReLU - Dropout - Linear, AdamW with weight decay, a linear-decay LR schedule over TOTAL steps."""

    def __init__(self, optimizer: str = "adamw", total: int = TOTAL) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Dropout(0.2), nn.Linear(12, 3))
        self.optimizer_name, self.total = optimizer, total

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], index: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], index: int) -> None:
        x, y = batch
        self.log("val_acc", (self(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):  # noqa: ANN201
        if self.optimizer_name == "sgd":
            optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
        else:
            optimizer = torch.optim.AdamW(self.parameters(), lr=0.02, weight_decay=0.1)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 1 - t / (self.total + 1))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def data(n: int = 60, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    return TensorDataset(x, (x[:, 0] > 0).long() + (x[:, 1] > 1).long())


def loaders(batch_size: int = 8) -> tuple[DataLoader, DataLoader]:
    return DataLoader(data(), batch_size=batch_size, shuffle=True), DataLoader(data(40, 1), batch_size=40)


def model(seed: int = 0, **kwargs: object) -> Tiny:
    torch.manual_seed(seed)
    return Tiny(**kwargs)
