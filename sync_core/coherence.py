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
the cached features, ``pair_batch`` pairs per vectorised call. LPIPS features of a 512x512 crop take ~120 MB in
fp32, so at most ``2 * crop_batch`` crops are held at once; Gram matrices are tiny and cached for all crops.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .perceptual import PerceptualLoss
from .style_backbone import STYLE_BACKBONE_FILE, STYLE_LAYERS, StyleWeightsMissing, build_style_vgg, find_style_weights

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

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Box = tuple[int, int, int, int]
Progress = Callable[[int, int], None]


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


# ---- the style loss -------------------------------------------------------------------------------------------------
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


def _block_pairs(ga: range, gb: range, device: torch.device) -> tuple[Tensor, Tensor]:
    """Local indices of the pairs of two crop groups: ``i < j`` within one group, every ``(i, j)`` across two."""
    if ga == gb:
        ia, ib = torch.triu_indices(len(ga), len(ga), offset=1, device=device)
        return ia, ib
    return torch.arange(len(ga), device=device).repeat_interleave(len(gb)), torch.arange(len(gb), device=device).repeat(
        len(ga)
    )


def _lpips_steps(num_crops: int, crop_batch: int, pair_batch: int) -> int:
    """Progress steps of one panorama in :func:`intra_lpips`: one per pair chunk (at least one) of every group pair."""
    groups = _groups(num_crops, crop_batch)
    sizes = [
        len(a) * (len(a) - 1) // 2 if a == b else len(a) * len(b) for i, a in enumerate(groups) for b in groups[i:]
    ]
    return sum(max(1, -(-n // pair_batch)) for n in sizes)


def _pairwise_lpips_sum(
    model: torch.nn.Module, crops: Tensor, crop_batch: int, pair_batch: int, progress: Progress | None
) -> Tensor:
    """Sum (float64) of the LPIPS of every pair of ``crops`` ([K,3,c,c] in [0,1], any device). Features of at most
    ``2 * crop_batch`` crops live at once (each computed once when K <= crop_batch); pairs are compared
    ``pair_batch`` at a time in one vectorised call (no Python loop over pairs)."""
    param = next(model.parameters())
    groups = _groups(crops.shape[0], crop_batch)
    total = _lpips_steps(crops.shape[0], crop_batch, pair_batch)
    done, result = 0, torch.zeros((), dtype=torch.float64)

    def feats(group: range) -> list[Tensor]:
        x = crops[group.start : group.stop].to(device=param.device, dtype=param.dtype) * 2.0 - 1.0
        return lpips_features(model, x)

    for a, ga in enumerate(groups):
        fa = feats(ga)
        for gb in groups[a:]:
            fb = fa if gb == ga else feats(gb)
            ia, ib = _block_pairs(ga, gb, param.device)
            for s in range(0, max(1, ia.numel()), pair_batch):
                if ia.numel():
                    ca, cb = ia[s : s + pair_batch], ib[s : s + pair_batch]
                    d = lpips_distance(model, [f.index_select(0, ca) for f in fa], [f.index_select(0, cb) for f in fb])
                    result += d.double().sum().cpu()
                done += 1
                if progress is not None:
                    progress(done, total)
            del fb
        del fa
    return result


@torch.no_grad()
def intra_lpips(
    model: torch.nn.Module,
    images: Tensor,
    crop: int = 512,
    stride: int | None = None,
    crop_batch: int = 4,
    progress: Progress | None = None,
    pair_batch: int = 64,
) -> CoherenceScores:
    """Intra-LPIPS of each panorama: the mean LPIPS over all pairs of its crops (see the module Convention).

    ``model`` is an ``lpips.LPIPS`` v0.1 (e.g. :func:`sync_core.perceptual.build_lpips`); it runs on its own
    device and dtype, crops are moved there ``crop_batch`` at a time and pairs compared ``pair_batch`` at a time.
    ``progress(done, total)`` is called after every pair chunk (total counts all panoramas)."""
    _check_lpips(model)
    images = _check_images(images)
    boxes = _boxes_with_pairs(images.shape[-2], images.shape[-1], crop, stride, "Intra-LPIPS")
    if crop_batch < 1 or pair_batch < 1:
        raise ValueError(f"crop_batch and pair_batch must be >= 1, got {crop_batch}, {pair_batch}")
    per_image_steps = _lpips_steps(len(boxes), crop_batch, pair_batch)
    pairs = len(boxes) * (len(boxes) - 1) // 2
    scores = []
    for n, image in enumerate(images):
        inner = (
            None
            if progress is None
            else (lambda d, t, n=n: progress(n * per_image_steps + d, images.shape[0] * per_image_steps))
        )
        scores.append(_pairwise_lpips_sum(model, extract_crops(image, boxes), crop_batch, pair_batch, inner) / pairs)
    return CoherenceScores(torch.stack(scores), crops=len(boxes), pairs=pairs)


@torch.no_grad()
def intra_style_loss(
    vgg: torch.nn.Sequential,
    images: Tensor,
    crop: int = 512,
    stride: int | None = None,
    crop_batch: int = 4,
    progress: Progress | None = None,
    pair_batch: int = 256,
) -> CoherenceScores:
    """Intra-Style-L of each panorama: the SUM of the style loss over all pairs of its crops, after resizing the
    shorter side to ``crop`` (see the module Convention). ``vgg`` comes from :func:`build_style_vgg`; crops go
    through it ``crop_batch`` at a time on its device and dtype; the Gram matrices of all crops are kept and
    compared ``pair_batch`` pairs at a time."""
    images = _check_images(images)
    if crop_batch < 1 or pair_batch < 1:
        raise ValueError(f"crop_batch and pair_batch must be >= 1, got {crop_batch}, {pair_batch}")
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
        ia, ib = torch.triu_indices(len(boxes), len(boxes), offset=1, device=layers[0].device)
        total = torch.zeros((), dtype=torch.float64)
        for s in range(0, ia.numel(), pair_batch):
            ca, cb = ia[s : s + pair_batch], ib[s : s + pair_batch]
            loss = sum(((g.index_select(0, ca) - g.index_select(0, cb)) ** 2).mean(dim=(1, 2)) for g in layers)
            total += loss.double().sum().cpu()
        scores.append(total)
    return CoherenceScores(torch.stack(scores), crops=len(boxes), pairs=len(boxes) * (len(boxes) - 1) // 2)
