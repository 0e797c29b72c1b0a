"""Panorama coherence metrics of the SyncDiffusion paper: Intra-LPIPS and Intra-Style-L.

Both compare every pair of non-overlapping square crops of one panorama; lower = the crops look more alike =
more coherent. The protocol follows the official evaluation code of SyncDiffusion (``eval_code/eval_intra_lpips.py``
and ``eval_code/eval_style_loss.py``); docs/coherence_metrics.md lists every detail and where we differ.

- **Intra-LPIPS**: LPIPS v0.1 (VGG16 trunk by default) between the two crops of every pair, inputs in [-1, 1] at
  native resolution; the mean over pairs is the panorama's value.
- **Intra-Style-L**: the Gatys style loss between the two crops of every pair. Inputs are ImageNet-normalised; the
  features are the outputs of VGG19's first five convolutions (``conv1_1, conv1_2, conv2_1, conv2_2, conv3_1``,
  taken before their ReLU); the Gram matrix of a ``[C, H, W]`` feature map ``F`` is ``F F^T / (C*H*W)``; a pair's
  loss is ``sum over the 5 layers of mean((G_a - G_b)^2)``. As in the official code, the panorama's value is the
  SUM over its pairs (not the mean), after resizing the panorama so that its shorter side equals the crop size
  (the official loader's ``Resize(512)``).
- Both: the dataset value is the mean over panoramas.

Cost: each crop goes through a backbone once per feature batch (see :func:`intra_lpips`); pair comparisons reuse
the cached features. LPIPS features of a 512x512 crop take ~120 MB in fp32, so at most ``2 * crop_batch`` crops
are held at once; Gram matrices are tiny and cached for all crops.

Convention:
    images are ``[N, 3, H, W]`` float tensors in [0, 1] (values outside are clamped, like an 8-bit file); N is a
    batch of independent panoramas of one size. Crops are ``crop x crop`` squares placed row-major on a grid with
    step ``stride`` (default ``crop`` = non-overlapping) starting at the top-left pixel: the k-th crop covers rows
    ``[top, top + crop)`` and columns ``[left, left + crop)``. A remainder narrower (or shorter) than a crop at the
    right (bottom) edge is not evaluated, exactly like the official ``get_views_crop``. Panoramas taller than the
    crop get several crop rows for Intra-LPIPS; Intra-Style-L first resizes the shorter side to ``crop`` (so a
    1024x4096 panorama gives 2x8 LPIPS crops but 1x8 style crops at 512), as the official code does. Pairs are
    ``itertools.combinations(range(num_crops), 2)``. An image smaller than one crop (in either direction, before any
    resize) and fewer than 2 crops are errors (nothing is upscaled; without a pair there is nothing to compare).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .perceptual import PerceptualLoss

__all__ = [
    "STYLE_BACKBONE_FILE",
    "STYLE_LAYERS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "StyleWeightsMissing",
    "CoherenceScores",
    "crop_boxes",
    "crop_pairs",
    "extract_crops",
    "style_resize_size",
    "resize_for_style",
    "find_style_weights",
    "build_style_vgg",
    "gram_matrix",
    "style_grams",
    "lpips_features",
    "lpips_distance",
    "intra_lpips",
    "intra_style_loss",
]

STYLE_BACKBONE_FILE = "vgg19-dcbb9e9d.pth"
#: indices in torchvision's ``vgg19().features`` of conv1_1, conv1_2, conv2_1, conv2_2, conv3_1
STYLE_LAYERS = (0, 2, 5, 7, 10)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_VGG19_CONVS = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)

Box = tuple[int, int, int, int]
Progress = Callable[[int, int], None]


class StyleWeightsMissing(FileNotFoundError):
    """torchvision's VGG19 ImageNet file for Intra-Style-L was not found in any searched folder."""


@dataclass(frozen=True)
class CoherenceScores:
    """One metric over a batch of panoramas: ``per_image`` ``[N]`` (float64, CPU), the crops and pairs per
    panorama, and ``value`` = the mean over panoramas (the number the paper reports)."""

    per_image: Tensor
    crops: int
    pairs: int

    @property
    def value(self) -> float:
        return float(self.per_image.mean())


# ---- crops ---------------------------------------------------------------------------------------------------------
def crop_boxes(height: int, width: int, crop: int = 512, stride: int | None = None) -> list[Box]:
    """``(top, bottom, left, right)`` of every crop, row-major (see the module Convention); raises ValueError when
    ``crop``/``stride`` are not positive or the image is smaller than one crop."""
    stride = crop if stride is None else stride
    if int(crop) != crop or crop <= 0 or int(stride) != stride or stride <= 0:
        raise ValueError(f"crop and stride must be positive integers, got crop={crop!r} stride={stride!r}")
    if height < crop or width < crop:
        raise ValueError(f"a {width}x{height} (WxH) image holds no {crop}x{crop} crop")
    rows = (height - crop) // stride + 1
    cols = (width - crop) // stride + 1
    return [(r * stride, r * stride + crop, c * stride, c * stride + crop) for r in range(rows) for c in range(cols)]


def crop_pairs(num_crops: int) -> list[tuple[int, int]]:
    """Every unordered pair ``(i, j)``, ``i < j``, in ``itertools.combinations`` order."""
    return list(itertools.combinations(range(num_crops), 2))


def extract_crops(image: Tensor, boxes: Sequence[Box]) -> Tensor:
    """``[3, H, W]`` -> ``[K, 3, crop, crop]`` (copies, same device/dtype)."""
    return torch.stack([image[:, top:bottom, left:right] for top, bottom, left, right in boxes])


def style_resize_size(height: int, width: int, size: int) -> tuple[int, int]:
    """``(H, W)`` after torchvision's ``Resize(size)``: the shorter side becomes ``size``, the longer one
    ``int(size * long / short)`` (truncated)."""
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size


def resize_for_style(images: Tensor, size: int) -> Tensor:
    """Shorter side -> ``size`` with antialiased bilinear resampling (torchvision's tensor ``Resize``, which
    approximates the PIL resize of the official loader); unchanged when it already is."""
    h, w = images.shape[-2:]
    out_hw = style_resize_size(h, w, size)
    if out_hw == (h, w):
        return images
    return torch.nn.functional.interpolate(images, size=out_hw, mode="bilinear", align_corners=False, antialias=True)


def _check_images(images: Tensor) -> Tensor:
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a [N, 3, H, W] tensor in [0, 1], got {shape}")
    if images.shape[0] == 0:
        raise ValueError("images is an empty batch")
    return images.float().clamp(0.0, 1.0)


def _boxes_with_pairs(height: int, width: int, crop: int, stride: int | None, what: str) -> list[Box]:
    boxes = crop_boxes(height, width, crop, stride)
    if len(boxes) < 2:
        raise ValueError(
            f"{what}: a {width}x{height} (WxH) image holds {len(boxes)} {crop}x{crop} crop(s); at least "
            f"2 are needed to form a pair"
        )
    return boxes


# ---- VGG19 for the style loss --------------------------------------------------------------------------------------
def _search_order(search_dirs: Sequence[str]) -> list[str]:
    dirs = [os.fspath(d) for d in search_dirs if d]
    hub = os.path.join(torch.hub.get_dir(), "checkpoints")
    return dirs if hub in dirs else [*dirs, hub]


def find_style_weights(search_dirs: Sequence[str]) -> str | None:
    """Path of ``vgg19-dcbb9e9d.pth`` in ``search_dirs`` (in order), then in torch's hub cache; None if absent."""
    for d in _search_order(search_dirs):
        path = os.path.join(d, STYLE_BACKBONE_FILE)
        if os.path.isfile(path):
            return path
    return None


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
        path = backbone_path
        if path is not None and not os.path.isfile(path):
            raise StyleWeightsMissing(
                f"Intra-Style-L backbone file {path!r} does not exist; expected torchvision's '{STYLE_BACKBONE_FILE}'"
            )
        if path is None:
            path = find_style_weights(search_dirs)
        if path is None:
            searched = _search_order(search_dirs)
            raise StyleWeightsMissing(
                f"Intra-Style-L needs torchvision's VGG19 ImageNet file '{STYLE_BACKBONE_FILE}', which was not found."
                " Searched: " + ", ".join(repr(d) for d in searched) + f". Put '{STYLE_BACKBONE_FILE}' (from "
                f"torchvision, e.g. https://download.pytorch.org/models/{STYLE_BACKBONE_FILE}) into {searched[0]!r};"
                " no download is attempted."
            )
        backbone_state_dict = torch.load(path, map_location="cpu", weights_only=True)
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


def gram_matrix(features: Tensor) -> Tensor:
    """``[N, C, H, W]`` -> ``[N, C, C]``: ``F F^T / (C*H*W)`` per sample (the official normalisation)."""
    n, c, h, w = features.shape
    flat = features.reshape(n, c, h * w)
    return torch.bmm(flat, flat.transpose(1, 2)) / (c * h * w)


def style_grams(vgg: torch.nn.Sequential, crops: Tensor) -> list[Tensor]:
    """Gram matrices of the five style layers for crops ``[K, 3, h, w]`` in [0, 1] (ImageNet-normalised here)."""
    mean = torch.tensor(IMAGENET_MEAN, device=crops.device, dtype=crops.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=crops.device, dtype=crops.dtype).view(1, 3, 1, 1)
    x = (crops - mean) / std
    grams = []
    for index, layer in enumerate(vgg):
        x = layer(x)
        if index in STYLE_LAYERS:
            grams.append(gram_matrix(x))
    return grams


# ---- LPIPS, split into per-crop features and a pair distance -------------------------------------------------------
def _check_lpips(model: torch.nn.Module) -> None:
    if not (
        getattr(model, "lpips", False)
        and getattr(model, "version", None) == "0.1"
        and not getattr(model, "spatial", True)
    ):
        raise ValueError(
            "intra_lpips needs an lpips.LPIPS v0.1 model with learned heads and spatial=False "
            "(sync_core.perceptual.build_lpips builds one)"
        )


def lpips_features(model: torch.nn.Module, images: Tensor) -> list[Tensor]:
    """The unit-normalised trunk features ``lpips.LPIPS`` compares, for images in [-1, 1]."""
    return PerceptualLoss(model).features(images)


def lpips_distance(model: torch.nn.Module, feats_a: Sequence[Tensor], feats_b: Sequence[Tensor]) -> Tensor:
    """``lpips.LPIPS(a, b)`` from :func:`lpips_features` of a and b (same batch size): ``[n]``."""
    return PerceptualLoss(model).distance(feats_a, feats_b)


def _groups(num: int, size: int) -> list[range]:
    return [range(s, min(s + size, num)) for s in range(0, num, size)]


def _pairwise_lpips(model: torch.nn.Module, crops: Tensor, crop_batch: int, progress: Progress | None) -> Tensor:
    """LPIPS of every pair of ``crops`` ([K,3,c,c] in [0,1], any device), in :func:`crop_pairs` order; features
    of at most ``2 * crop_batch`` crops live at once (computed once each when K <= crop_batch)."""
    param = next(model.parameters())
    groups = _groups(crops.shape[0], crop_batch)
    total, done = len(groups) * (len(groups) + 1) // 2, 0
    values: dict[tuple[int, int], Tensor] = {}

    def feats(group: range) -> list[Tensor]:
        x = crops[group.start : group.stop].to(device=param.device, dtype=param.dtype) * 2.0 - 1.0
        return lpips_features(model, x)

    def compare(fa: list[Tensor], ga: range, fb: list[Tensor], gb: range, pairs: list[tuple[int, int]]) -> None:
        for chunk in (pairs[s : s + crop_batch] for s in range(0, len(pairs), crop_batch)):
            ia = torch.tensor([i - ga.start for i, _ in chunk], device=param.device)
            ib = torch.tensor([j - gb.start for _, j in chunk], device=param.device)
            d = lpips_distance(model, [f.index_select(0, ia) for f in fa], [f.index_select(0, ib) for f in fb])
            for pair, v in zip(chunk, d.double().cpu()):
                values[pair] = v

    for a, ga in enumerate(groups):
        fa = feats(ga)
        compare(fa, ga, fa, ga, list(itertools.combinations(ga, 2)))
        done += 1
        if progress is not None:
            progress(done, total)
        for gb in groups[a + 1 :]:
            fb = feats(gb)
            compare(fa, ga, fb, gb, list(itertools.product(ga, gb)))
            del fb
            done += 1
            if progress is not None:
                progress(done, total)
        del fa
    return torch.stack([values[p] for p in crop_pairs(crops.shape[0])])


@torch.no_grad()
def intra_lpips(
    model: torch.nn.Module,
    images: Tensor,
    crop: int = 512,
    stride: int | None = None,
    crop_batch: int = 4,
    progress: Progress | None = None,
) -> CoherenceScores:
    """Intra-LPIPS of each panorama: the mean LPIPS over all pairs of its crops (see the module Convention).

    ``model`` is an ``lpips.LPIPS`` v0.1 (e.g. :func:`sync_core.perceptual.build_lpips`); it runs on its own
    device and dtype, crops are moved there ``crop_batch`` at a time. ``progress(done, total)`` is called after
    every feature batch (total counts all panoramas)."""
    _check_lpips(model)
    images = _check_images(images)
    boxes = _boxes_with_pairs(images.shape[-2], images.shape[-1], crop, stride, "Intra-LPIPS")
    if crop_batch < 1:
        raise ValueError(f"crop_batch must be >= 1, got {crop_batch}")
    per_group = len(_groups(len(boxes), crop_batch))
    per_image_steps = per_group * (per_group + 1) // 2
    scores = []
    for n, image in enumerate(images):
        inner = (
            None
            if progress is None
            else (lambda d, t, n=n: progress(n * per_image_steps + d, images.shape[0] * per_image_steps))
        )
        scores.append(_pairwise_lpips(model, extract_crops(image, boxes), crop_batch, inner).mean())
    return CoherenceScores(torch.stack(scores), crops=len(boxes), pairs=len(crop_pairs(len(boxes))))


@torch.no_grad()
def intra_style_loss(
    vgg: torch.nn.Sequential,
    images: Tensor,
    crop: int = 512,
    stride: int | None = None,
    crop_batch: int = 4,
    progress: Progress | None = None,
) -> CoherenceScores:
    """Intra-Style-L of each panorama: the SUM of the style loss over all pairs of its crops, after resizing the
    shorter side to ``crop`` (see the module Convention). ``vgg`` comes from :func:`build_style_vgg`; crops go
    through it ``crop_batch`` at a time on its device and dtype."""
    images = _check_images(images)
    if crop_batch < 1:
        raise ValueError(f"crop_batch must be >= 1, got {crop_batch}")
    crop_boxes(images.shape[-2], images.shape[-1], crop, stride)  # the image itself must hold a crop
    param = next(vgg.parameters())
    steps_done, scores = 0, []
    boxes: list[Box] = []
    for image in images:
        resized = resize_for_style(image.unsqueeze(0), crop)[0]
        boxes = _boxes_with_pairs(
            resized.shape[-2], resized.shape[-1], crop, stride, f"Intra-Style-L (shorter side resized to {crop})"
        )
        crops = extract_crops(resized, boxes)
        groups = _groups(len(boxes), crop_batch)
        grams: list[list[Tensor]] = []
        for group in groups:
            x = crops[group.start : group.stop].to(device=param.device, dtype=param.dtype)
            grams.append([g.float() for g in style_grams(vgg, x)])
            steps_done += 1
            if progress is not None:
                progress(steps_done, images.shape[0] * len(groups))
        layers = [torch.cat([g[k] for g in grams]) for k in range(len(STYLE_LAYERS))]
        ia, ib = (torch.tensor(idx, device=layers[0].device) for idx in zip(*crop_pairs(len(boxes))))
        loss = sum(((g.index_select(0, ia) - g.index_select(0, ib)) ** 2).mean(dim=(1, 2)) for g in layers)
        scores.append(loss.double().sum().cpu())
    return CoherenceScores(torch.stack(scores), crops=len(boxes), pairs=len(crop_pairs(len(boxes))))
