"""Graph builders for the robustness cases of the full-sphere nodes and the filled stereo holes (the rest of the
suite's builders are in tests/robustness_graphs.py)."""

from __future__ import annotations

from robustness_graphs import STEREO, image, mask, mask_preview, preview, sd_base

DEPTH_MAP = {k: STEREO[k] for k in ("depth_mode", "near_m", "far_m", "metric_scale_m", "sphere_radius_m",
                                    "displacement_m", "invert_depth")}  # fmt: skip
SPHERE = {"seed": 0, "steps": 1, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "view_size": 64,
          "fov": 90.0, "layout": "cube", "overlap": 0.1, "width": 128, "sync_until": 0.8}  # fmt: skip


def sphere_sampler(**bad):
    g = sd_base()
    g["t"] = {
        "class_type": "SDL3D_SphereKSampler",
        "inputs": {"model": ["ck", 0], "positive": ["pos", 0], "negative": ["neg", 0], "vae": ["vae", 0],
                   **SPHERE, **bad},
    }  # fmt: skip
    g["out"] = preview(["t", 0])
    return g


def projection(node_type: str, size=(16, 8), **inputs):
    """One projection node on a (by default 2:1) image; its first output previewed."""
    if node_type != "SDL3D_PerspectiveToEquirect":  # the others carry an optional mask along
        inputs = {"mask_interpolation": "bilinear (depth)", **inputs}
    g = {"img": image(*size), "t": {"class_type": node_type, "inputs": {"image": ["img", 0], **inputs}}}
    g["out"] = preview(["t", 0])
    return g


def hole_mask(**bad):
    inputs = {"image": ["img", 0], "depth": ["d", 0], "ipd_m": 0.064, **DEPTH_MAP, "grow_px": 8, **bad}
    g = {"img": image(), "d": mask(), "t": {"class_type": "SDL3D_Stereo360HoleMask", "inputs": inputs}}
    return mask_preview(g, ["t", 0])


def filled_holes(background=(16, 8), **bad):
    g = {"img": image(), "d": mask(), "bg": image(*background), "m": mask(value=0.0),
         "t": {"class_type": "SDL3D_Stereo360FilledHoles",
               "inputs": {"image": ["img", 0], "depth": ["d", 0], "background": ["bg", 0], "mask": ["m", 0],
                          "ipd_m": 0.064, **DEPTH_MAP, "layout": "top_bottom", **bad}}}  # fmt: skip
    g["out"] = preview(["t", 0])
    return g
