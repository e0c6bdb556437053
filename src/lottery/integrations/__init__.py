"""Lottery tickets where researchers already train (docs/api.md, "Training with PyTorch Lightning" and "Training
with Hugging Face Transformers"):

    lottery.integrations.lightning       LotteryCallback(mask), train_fn(train_dataloaders, ...)   (extra: lightning)
    lottery.integrations.transformers    LotteryCallback(mask), train_fn(args, train_dataset, ...) (extra: transformers)

Each framework is imported only by its own module, so `import lottery` works without either.
"""
