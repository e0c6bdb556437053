"""Tickets out of the store: `export_ticket` writes a run's ticket (m ⊙ W_k, with its mask) or its trained
subnetwork as safetensors, a plain `state_dict` file, or in `torch.nn.utils.prune`'s convention, with a model
card; `load_ticket` loads any of them into a user's own model."""

from lottery.export.load import load_ticket
from lottery.export.write import FORMATS, WHAT, export_ticket

__all__ = ["FORMATS", "WHAT", "export_ticket", "load_ticket"]
