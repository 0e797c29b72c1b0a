"""What the SyncDiffusion sampler nodes refuse before sampling, and the optional configured-sampler input.

The per-view sampler cannot honour GLIGEN boxes (not remapped into views), model-patch controls that carry a hint
image (the whole hint would be squashed into each view), MultiGPU clones (evaluated under torch.no_grad(): no sync
gradient) or a base SAMPLER that is not a k-diffusion function. Each refusal names the node, the input, the value
and the fix; the ComfyUI internals read for it are in nodes/shared/comfy_compat.py.
"""

from __future__ import annotations

from comfy_api.latest import io

from ..shared import comfy_compat
from ..shared.common import input_error


def base_sampler_input():
    return io.Sampler.Input(
        "sampler",
        optional=True,
        tooltip="A configured base sampler (KSamplerSelect, SamplerEulerAncestral with its eta, ...). When "
        "connected it replaces sampler_name and keeps its own options.",
    )


def check_base_sampler(node: str, sampler) -> None:
    if sampler is not None and not comfy_compat.is_ksampler(sampler):
        raise input_error(
            node,
            "sampler",
            sampler,
            "is not a k-diffusion sampler (KSAMPLER) that SyncDiffusion can run between its sync steps",
            "connect KSamplerSelect or a configured sampler node such as SamplerEulerAncestral, not another "
            "SyncDiffusion Sampler",
        )


def check_unsupported(node: str, model, conditioning: dict, gradient: bool = True) -> None:
    """Refuse what the per-view sampler cannot honour, before sampling. `conditioning`: input name -> CONDITIONING
    (or a guider's processed cond list). `gradient`: the run takes the sync gradient (MultiGPU clones are refused
    only then: plain per-view denoising works through ComfyUI's multi-GPU branch)."""
    for name, cond in conditioning.items():
        if comfy_compat.gligen_in(cond):
            raise input_error(
                node,
                name,
                "conditioning with GLIGEN boxes",
                "GLIGEN boxes are placed on the whole image and are not remapped into each view",
                "remove GLIGEN Textbox Apply from this conditioning, or place prompts with Conditioning (Set Area), "
                "which is cropped per view",
            )
    patches = comfy_compat.hint_model_patches(model)
    if patches:
        raise input_error(
            node,
            "model",
            ", ".join(patches),
            "a model-patch control scales its whole hint image into every view instead of cropping it",
            "apply the control with Apply ControlNet (its hint is cropped per view), or sample without SyncDiffusion",
        )
    clones = comfy_compat.multigpu_clones(model) if gradient else []
    if clones:
        raise input_error(
            node,
            "model",
            f"MultiGPU clones on {[str(c.load_device) for c in clones]}",
            "ComfyUI evaluates MultiGPU clones in worker threads under torch.no_grad(), so the sync gradient would "
            "vanish",
            "remove the MultiGPU node in front of this sampler (sample on one device)",
        )
