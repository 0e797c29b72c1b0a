"""The VGG19 backbone of Intra-Style-L (sync_core.coherence): torchvision's ``vgg19().features`` up to conv3_1,
loaded from torchvision's ImageNet file ``vgg19-dcbb9e9d.pth`` found in given folders or the torch hub cache (never
downloaded)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from .perceptual import find_torchvision_file, load_torchvision_file

STYLE_BACKBONE_FILE = "vgg19-dcbb9e9d.pth"
#: indices in torchvision's ``vgg19().features`` of conv1_1, conv1_2, conv2_1, conv2_2, conv3_1
STYLE_LAYERS = (0, 2, 5, 7, 10)
_VGG19_CONVS = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)


class StyleWeightsMissing(FileNotFoundError):
    """torchvision's VGG19 ImageNet file for Intra-Style-L was not found in any searched folder."""


def find_style_weights(search_dirs: Sequence[str]) -> str | None:
    """Path of ``vgg19-dcbb9e9d.pth`` in ``search_dirs`` (in order), then in torch's hub cache; None if absent."""
    return find_torchvision_file(STYLE_BACKBONE_FILE, search_dirs)


def _load_vgg19_features(features: torch.nn.Sequential, state_dict: Mapping[str, Tensor]) -> None:
    src = {}
    for key, value in state_dict.items():
        k = key[len("module.") :] if key.startswith("module.") else key
        if k.startswith("features."):
            src[k[len("features.") :]] = value
    needed = [f"{i}.{p}" for i in STYLE_LAYERS for p in ("weight", "bias")]
    missing = [f"features.{k}" for k in needed if k not in src]
    if missing:
        raise ValueError(
            f"the style backbone state dict is not a torchvision VGG19 checkpoint: missing {missing[:4]}"
            f" (found {len(src)} features.* keys)"
        )
    deep = any(int(k.split(".")[0]) > STYLE_LAYERS[-1] for k in src if k.split(".")[0].isdigit())
    if deep and any(f"{i}.weight" not in src for i in _VGG19_CONVS):
        raise ValueError(
            "the style backbone file holds a VGG with fewer convolutions than VGG19 (VGG16?): use "
            f"torchvision's VGG19 ImageNet file '{STYLE_BACKBONE_FILE}'"
        )
    target = features.state_dict()
    for k in (k for k in src if k in target):
        if tuple(src[k].shape) != tuple(target[k].shape):
            raise ValueError(
                f"the style backbone tensor features.{k} has shape {tuple(src[k].shape)}, expected "
                f"{tuple(target[k].shape)}: not VGG19"
            )
    features.load_state_dict({k: v for k, v in src.items() if k in target}, strict=deep)


def build_style_vgg(
    backbone_path: str | None = None,
    search_dirs: Sequence[str] = (),
    backbone_state_dict: Mapping[str, Tensor] | None = None,
) -> torch.nn.Sequential:
    """torchvision's ``vgg19().features`` up to conv3_1 (layers 0..10), ImageNet weights from a torchvision-format
    file or state dict (the full checkpoint or its ``features.*`` part); eval mode, frozen, CPU, fp32, ReLUs not
    in place. Priority: ``backbone_state_dict``, ``backbone_path``, then ``search_dirs`` + the torch hub cache.
    Raises :class:`StyleWeightsMissing` when no file is found (nothing is downloaded)."""
    if backbone_state_dict is None:
        backbone_state_dict = load_torchvision_file(
            STYLE_BACKBONE_FILE,
            backbone_path,
            search_dirs,
            "Intra-Style-L",
            StyleWeightsMissing,
            what="torchvision's VGG19 ImageNet file",
        )
    from torchvision.models import vgg as tv_vgg  # local import: only needed here

    features = tv_vgg.make_layers(tv_vgg.cfgs["E"])  # exactly torchvision's vgg19().features
    _load_vgg19_features(features, backbone_state_dict)
    trunk = torch.nn.Sequential(
        *[
            torch.nn.ReLU(inplace=False) if isinstance(m, torch.nn.ReLU) else m
            for m in list(features)[: STYLE_LAYERS[-1] + 1]
        ]
    )
    trunk.eval()
    trunk.requires_grad_(False)
    return trunk
