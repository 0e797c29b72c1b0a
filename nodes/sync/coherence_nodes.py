"""SyncDiffusion Coherence: the paper's panorama coherence metrics (Intra-LPIPS, Intra-Style-L) as a node.

The math is sync_core.coherence; this module validates the IMAGE inputs, bounds the work (crop pairs against
SDL3D_MAX_PAIRS, crops and pairs per call from the memory limit) before loading anything, loads the backbones from
models/lpips, moves them to ComfyUI's device, reports progress and stays interruptible, and formats the report.
"""

from __future__ import annotations

import comfy.model_management
import comfy.utils
import folder_paths
import torch
from comfy_api.latest import io, ui

from ...sync_core import coherence as core
from ..shared import memory_guards, model_cache, validation
from ..shared.common import CATEGORY_SAMPLING, NodeInputError, describe, input_error, node_name, require_image
from ..shared.model_folders import LPIPS_FOLDER, folder_label
from .inputs import LPIPS_TYPE, load_lpips


def _check_crops(node: str, name: str, image: torch.Tensor, crop: int) -> None:
    """Both metrics need >= 2 crops: LPIPS on the image as is, the style loss after the shorter side -> crop."""
    h, w = image.shape[1:3]
    if h < crop or w < crop:
        raise input_error(
            node,
            name,
            image,
            f"is {w}x{h} (WxH), smaller than one {crop}x{crop} crop (crop_size)",
            f"lower crop_size to <= {min(h, w)} or evaluate a larger panorama",
        )
    lpips_crops = len(core.crop_boxes(h, w, crop))
    rh, rw = core.style_resize_size(h, w, crop)
    style_crops = len(core.crop_boxes(rh, rw, crop))
    if lpips_crops < 2:
        raise input_error(
            node,
            name,
            image,
            f"{w}x{h} holds only 1 non-overlapping {crop}x{crop} crop, the metrics compare pairs of crops",
            f"evaluate a panorama at least {2 * crop} px wide or tall, or lower crop_size to <= {max(h, w) // 2}",
        )
    if style_crops < 2:
        raise input_error(
            node,
            name,
            image,
            f"Intra-Style-L resizes the shorter side to crop_size first (the "
            f"paper's protocol), which leaves {rw}x{rh} = 1 crop",
            "evaluate a panorama with an aspect ratio of at least 2:1 (e.g. 1024x512)",
        )


def _pairs(image: torch.Tensor, crop: int) -> tuple[int, int, int]:
    """(crops, Intra-LPIPS pairs, Intra-Style-L pairs) of one panorama of ``image``."""
    h, w = image.shape[1:3]
    crops = len(core.crop_boxes(h, w, crop))
    style = len(core.crop_boxes(*core.style_resize_size(h, w, crop), crop))
    return crops, crops * (crops - 1) // 2, style * (style - 1) // 2


def _require_pair_work(node: str, crop: int, images: dict[str, torch.Tensor]) -> None:
    """The crop pairs of the whole run against SDL3D_MAX_PAIRS, before anything is loaded."""
    total, most, parts = 0, 0, []
    for name, image in images.items():
        crops, lp, st = _pairs(image, crop)
        total += image.shape[0] * (lp + st)
        most = max(most, lp + st)
        parts.append(
            f"'{name}': {image.shape[0]} x {image.shape[2]}x{image.shape[1]} with {crops:,} crops of {crop} px, "
            f"{lp:,} + {st:,} pairs each"
        )
    limit, _ = memory_guards.work_limit("pairs")
    name, value = ("crop_size", crop) if most > limit else ("image", images["image"])
    memory_guards.require_work(
        node,
        name,
        value,
        total,
        "pairs",
        "; ".join(parts),
        "raise crop_size (the paper uses 512: 6 crops on 3072x512), or evaluate fewer or smaller panoramas per run",
    )


def _style_vgg(node: str, image: torch.Tensor):
    """The VGG19 style backbone, read once per file (model_cache), behind a ModelPatcher."""
    search = folder_paths.get_folder_paths(LPIPS_FOLDER) if LPIPS_FOLDER in folder_paths.folder_names_and_paths else []
    path = core.find_style_weights(search)
    if path is None:
        file = core.STYLE_BACKBONE_FILE
        raise NodeInputError(
            f"{node}: Intra-Style-L needs torchvision's VGG19 ImageNet file '{file}' to score input 'image' = "
            f"{describe(image)}, and it is missing (searched the lpips model folders and the torch hub cache). Fix: "
            f"put '{file}' into {folder_label(LPIPS_FOLDER)} (nothing is downloaded)"
        )
    key = model_cache.file_key("style_vgg", path)
    return model_cache.cached(key, lambda: model_cache.managed(core.build_style_vgg(backbone_path=path)))


class _Progress:
    """One progress bar over all phases; every backbone batch checks for an interrupt."""

    def __init__(self, phases: int):
        self.phases, self.phase = phases, 0
        self.bar = comfy.utils.ProgressBar(100 * phases)

    def __call__(self, done: int, total: int) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        self.bar.update_absolute(100 * self.phase + (100 * done) // max(total, 1), 100 * self.phases)

    def next_phase(self) -> None:
        self.phase += 1


def _measure(image: torch.Tensor, crop: int, lpips_model, vgg, progress: _Progress, batches: tuple[int, int]):
    comfy.model_management.throw_exception_if_processing_interrupted()
    images = image[..., :3].movedim(-1, 1)  # [B,H,W,3] -> [B,3,H,W]; the core copies before clamping
    crops, pairs = batches
    lp = core.intra_lpips(lpips_model, images, crop=crop, progress=progress, crop_batch=crops, pair_batch=pairs)
    progress.next_phase()
    st = core.intra_style_loss(vgg, images, crop=crop, progress=progress, crop_batch=crops, pair_batch=pairs)
    progress.next_phase()
    return lp, st


def _line(label: str, image: torch.Tensor, net: str, lp: core.CoherenceScores, st: core.CoherenceScores) -> str:
    b, h, w = image.shape[:3]
    text = (
        f"{label}: Intra-LPIPS ({net}) {lp.value:.4f}   Intra-Style-L {st.value:.4g}   "
        f"[{b} x {w}x{h}; LPIPS: {lp.crops} crops, mean of {lp.pairs} pairs; style: {st.crops} crops, sum of "
        f"{st.pairs} pairs]"
    )
    if b > 1:
        shown = min(b, 16)
        text += (
            "\n  per panorama Intra-LPIPS: "
            + ", ".join(f"{v:.4f}" for v in lp.per_image[:shown].tolist())
            + "\n  per panorama Intra-Style-L: "
            + ", ".join(f"{v:.4g}" for v in st.per_image[:shown].tolist())
            + (" ..." if b > shown else "")
        )
    return text


def _delta(name: str, a: float, b: float) -> str:
    rel = f" ({100.0 * (a - b) / b:+.1f}%)" if b else ""
    return f"{name} {a - b:+.4g}{rel}"


def format_report(crop: int, net: str, image, scores, compare=None, compare_scores=None) -> str:
    lines = [
        f"SyncDiffusion coherence, {crop}x{crop} non-overlapping crops (lower = more coherent)",
        _line("image  ", image, net, *scores),
    ]
    if compare is not None:
        lines.append(_line("compare", compare, net, *compare_scores))
        (lp, st), (clp, cst) = scores, compare_scores
        better = [
            m for m, a, b in (("Intra-LPIPS", lp.value, clp.value), ("Intra-Style-L", st.value, cst.value)) if a < b
        ]
        verdict = (
            "image is more coherent on both metrics"
            if len(better) == 2
            else "compare is more coherent on both metrics"
            if not better
            else f"image is more coherent on {better[0]} only"
        )
        lines.append(
            f"image - compare: {_delta('Intra-LPIPS', lp.value, clp.value)}, "
            f"{_delta('Intra-Style-L', st.value, cst.value)}: {verdict}"
        )
    return "\n".join(lines)


class SyncDiffusionCoherence(validation.CheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SDL3D_SyncDiffusionCoherence",
            display_name="SyncDiffusion Coherence",
            category=CATEGORY_SAMPLING,
            description="Measures panorama coherence like the SyncDiffusion paper: Intra-LPIPS (mean LPIPS over all "
            "pairs of non-overlapping crops) and Intra-Style-L (Gatys style loss, VGG19 conv1-conv5 "
            "Gram matrices, summed over the pairs). Lower = more coherent. Connect a w=0 "
            "(MultiDiffusion) result to 'compare' to see both side by side. Needs "
            "vgg16-397923af.pth and vgg19-dcbb9e9d.pth in models/lpips (never downloaded).",
            inputs=[
                io.Image.Input(
                    "image",
                    tooltip="The panorama(s) to evaluate (a batch is averaged, as in the paper). "
                    "Must hold at least 2 crops, e.g. 1024x512 or wider for crop 512.",
                ),
                io.Int.Input(
                    "crop_size",
                    default=512,
                    min=32,
                    max=8192,
                    step=8,
                    tooltip="Crop size in pixels (the paper: 512 for 512x3072 panoramas = 6 crops, 15 "
                    "pairs). Crops start at the top-left; a right/bottom remainder narrower than a "
                    "crop is not evaluated. Intra-Style-L first resizes the shorter side to this.",
                ),
                io.Image.Input(
                    "compare",
                    optional=True,
                    tooltip="Optional second panorama batch (e.g. the same seed at sync_weight 0) "
                    "measured the same way; the report shows both and the difference. Its size "
                    "may differ.",
                ),
                LPIPS_TYPE.Input(
                    "lpips",
                    optional=True,
                    tooltip="LPIPS from the SyncDiffusion LPIPS Loader (default: LPIPS-VGG, the paper's "
                    "metric). The loader's resolution is ignored: the metric runs at the "
                    "native crop size.",
                ),
            ],
            outputs=[
                io.Float.Output(
                    "intra_lpips",
                    display_name="intra_lpips",
                    tooltip="Intra-LPIPS of 'image': mean LPIPS over all crop pairs, averaged over the "
                    "batch (lower = more coherent; the paper: ~0.59-0.69 at 512x3072).",
                ),
                io.Float.Output(
                    "intra_style",
                    display_name="intra_style",
                    tooltip="Intra-Style-L of 'image': style loss summed over all crop pairs, averaged "
                    "over the batch (lower = more coherent).",
                ),
                io.String.Output(
                    "report",
                    display_name="report",
                    tooltip="Both metrics for 'image' (and 'compare' if connected), per panorama for "
                    "batches, crop and pair counts, and the difference.",
                ),
            ],
        )

    @classmethod
    def execute(cls, image, crop_size, compare=None, lpips=None) -> io.NodeOutput:
        node = node_name(cls)
        crop = int(crop_size)
        if crop < 1:
            raise input_error(node, "crop_size", crop_size, "must be a positive number of pixels", "use 512")
        image = require_image(node, "image", image)
        _check_crops(node, "image", image, crop)
        if compare is not None:
            compare = require_image(node, "compare", compare)
            _check_crops(node, "compare", compare, crop)
        _require_pair_work(node, crop, {"image": image} if compare is None else {"image": image, "compare": compare})
        device = comfy.model_management.vae_device()  # where model_cache.managed loads LPIPS and the VGG
        batches = memory_guards.coherence_batches(node, lpips.net if lpips is not None else "vgg", crop, device)
        choice = lpips if lpips is not None else load_lpips(node)
        vgg = _style_vgg(node, image)
        lpips_patcher = choice.patcher if choice.patcher is not None else model_cache.managed(choice.model)
        comfy.model_management.load_models_gpu([lpips_patcher, vgg])
        lpips_model, vgg = lpips_patcher.model, vgg.model
        progress = _Progress(2 if compare is None else 4)
        scores = _measure(image, crop, lpips_model, vgg, progress, batches)
        compare_scores = _measure(compare, crop, lpips_model, vgg, progress, batches) if compare is not None else None
        report = format_report(crop, choice.net, image, scores, compare, compare_scores)
        return io.NodeOutput(scores[0].value, scores[1].value, report, ui=ui.PreviewText(report))


COHERENCE_NODES = [SyncDiffusionCoherence]
