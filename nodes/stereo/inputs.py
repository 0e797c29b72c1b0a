"""Inputs and outputs the stereo nodes share: one spec (id, range, default) each, the tooltip from the node."""

from __future__ import annotations

from comfy_api.latest import io

from ...ldm3d_core import layouts


def ipd_input(tooltip: str):
    return io.Float.Input("ipd_m", default=0.064, min=0.0, max=0.2, step=0.001, tooltip=tooltip)


def layout_input(tooltip: str):
    """How two eyes are packed into one frame (``ldm3d_core.layouts``)."""
    return io.Combo.Input("layout", options=list(layouts.LAYOUTS), default="top_bottom", tooltip=tooltip)


def eye_outputs(left_tooltip: str, right_tooltip: str) -> list:
    """stereo (the eyes packed by 'layout'), left, right."""
    return [
        io.Image.Output("stereo", display_name="stereo", tooltip="Both eyes packed as chosen by 'layout'."),
        io.Image.Output("left", display_name="left", tooltip=left_tooltip),
        io.Image.Output("right", display_name="right", tooltip=right_tooltip),
    ]
