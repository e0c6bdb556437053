"""Networks, one module per family; each registers the names it builds (`lottery.register_model`)."""

from lottery.models import conv, inception, lenet, resnet, resnet_imagenet, squeezenet, vgg  # noqa: F401
from lottery.models.base import Network
from lottery.models.registry import build, names

__all__ = ["Network", "build", "names"]
