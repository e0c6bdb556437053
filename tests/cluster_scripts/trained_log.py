"""A plugin (`Runtime(imports=...)`, imported by every Ray worker) that appends the path of every network a process
finishes training (its `final.safetensors` write) to $LOTTERY_TRAINED_LOG, one line each (O_APPEND)."""

from __future__ import annotations

import os

from lottery.store.run_dir import RunDir

_original = RunDir.write_tensors


def _logged(self, name, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
    result = _original(self, name, *args, **kwargs)
    log = os.environ.get("LOTTERY_TRAINED_LOG")
    if name == "final.safetensors" and log:
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{os.path.realpath(self.path)}\n".encode())
        finally:
            os.close(fd)
    return result


if not getattr(RunDir.write_tensors, "logs", False):  # once per process
    _logged.logs = True  # type: ignore[attr-defined]
    RunDir.write_tensors = _logged
