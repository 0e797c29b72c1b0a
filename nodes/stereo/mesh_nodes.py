"""Mesh export: the displaced sphere of an equirect RGB + depth as GLB (embedded texture), OBJ + MTL + PNG, PLY.

Adapter over ``ldm3d_core.mesh``; files go only under ComfyUI's output folder.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from comfy_api.latest import io

from ...ldm3d_core import distance
from ...ldm3d_core import mesh as core_mesh
from ..shared import file_guards, memory_guards, validation
from ..shared.common import CATEGORY_MESH, depth_inputs, equirect_depth, equirect_depth_inputs, input_error, node_name

FORMATS = ("glb", "obj", "ply", "all")


class SaveDepthMesh(validation.CheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SDL3D_SaveDepthMesh",
            display_name="Save 360 Depth Mesh (GLB/OBJ/PLY)",
            category=CATEGORY_MESH,
            description="Export the equirect as a sphere displaced by its depth (DepthFusion / THREE.6DOF style) "
            "for 6-DoF viewing: GLB with embedded texture, OBJ + MTL + PNG, or PLY with vertex colours. "
            "-Z forward, +X right, +Y up; view it from the centre.",
            is_output_node=True,
            inputs=[
                *equirect_depth_inputs("Equirectangular RGB panorama, 2:1; becomes the texture."),
                io.Combo.Input(
                    "format",
                    options=list(FORMATS),
                    default="glb",
                    tooltip="glb (one file, texture embedded), obj (+ .mtl + .png), ply (vertex colours "
                    "and UVs) or all three.",
                ),
                io.Int.Input(
                    "mesh_width",
                    default=1024,
                    min=8,
                    max=8192,
                    step=8,
                    tooltip="Vertex columns around the sphere (one more is added to duplicate the seam).",
                ),
                io.Int.Input(
                    "mesh_height",
                    default=512,
                    min=4,
                    max=4096,
                    step=4,
                    tooltip="Vertex rows from pole to pole (the pole rows collapse to points).",
                ),
                *depth_inputs(default_mode="sphere_displace"),  # DepthFusion look by default
                io.Boolean.Input(
                    "cull_edges",
                    default=False,
                    tooltip="Drop triangles spanning a depth discontinuity (no 'rubber sheet' between "
                    "foreground and background; leaves gaps instead).",
                ),
                io.Float.Input(
                    "edge_ratio_tau",
                    default=0.2,
                    min=0.0,
                    max=10.0,
                    step=0.01,
                    tooltip="With cull_edges: drop a triangle if max(r)/min(r) > 1 + tau.",
                ),
                io.String.Input(
                    "filename_prefix",
                    default="mesh/ldm3d_sphere",
                    tooltip="File name prefix inside ComfyUI's output folder (may contain a subfolder).",
                ),
            ],
            outputs=[
                io.String.Output(
                    "model_file",
                    display_name="model_file",
                    tooltip="Path of the first saved model relative to the output folder (connect to Preview 3D).",
                )
            ],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
        )

    RULE_INPUTS = ("filename_prefix",)

    @classmethod
    def input_rules(cls, node, values):
        yield validation.depth_problem(node, values, finite_far=True)
        yield validation.prefix_problem(node, values)

    @classmethod
    def execute(
        cls,
        image,
        depth,
        format,
        mesh_width,
        mesh_height,
        cull_edges,
        edge_ratio_tau,
        filename_prefix,
        **depth_widgets,
    ) -> io.NodeOutput:
        import comfy.utils

        node = node_name(cls)
        d, mapping = equirect_depth(node, image, depth, finite_far=True, **depth_widgets)  # before writing anything
        if format not in FORMATS:
            raise input_error(node, "format", format, "unknown format", f"use one of {FORMATS}")
        if mesh_width < 3 or mesh_height < 3:
            raise input_error(node, "mesh_width/mesh_height", (mesh_width, mesh_height), "too small", "use >= 8 x 4")
        prefix_problem = file_guards.prefix_problem(node, "filename_prefix", filename_prefix)
        if prefix_problem:
            raise validation.NodeInputError(prefix_problem)
        height, width = image.shape[1:3]
        cull = bool(cull_edges)
        memory_guards.require_memory(
            node,
            "mesh_width",
            mesh_width,
            memory_guards.mesh_memory(int(mesh_width), int(mesh_height), width, height, cull),
            f"use a smaller mesh (mesh_width x mesh_height; 1024 x 512 needs about "
            f"{memory_guards.format_bytes(memory_guards.mesh_memory(1024, 512, width, height, cull))})",
            device="cpu",
        )
        r_of = _positive_distances(node, mapping)

        folder, filename, counter, subfolder = file_guards.output_folder(node, "filename_prefix", filename_prefix)
        kinds = ("glb", "obj", "ply") if format == "all" else (format,)
        pbar = comfy.utils.ProgressBar(image.shape[0])
        saved, models, images = [], [], []

        def report(name: str) -> dict:
            rel = os.path.join(subfolder, name) if subfolder else name
            saved.append(rel.replace(os.sep, "/"))
            return {"filename": name, "subfolder": subfolder, "type": "output"}

        for b in range(image.shape[0]):
            rgb = image[b, ..., :3].detach().cpu().float().numpy()
            m = core_mesh.build_sphere_mesh(
                d[b].cpu().numpy(),
                rgb,
                r_of,
                int(mesh_width),
                int(mesh_height),
                float(edge_ratio_tau) if cull_edges else None,
            )
            if len(m.faces) == 0:
                raise input_error(
                    node,
                    "edge_ratio_tau",
                    edge_ratio_tau,
                    "culled every triangle of the mesh",
                    "raise edge_ratio_tau (0.2 is typical) or turn cull_edges off",
                )
            png = core_mesh.png_bytes(rgb)
            stem = f"{filename.replace('%batch_num%', str(b))}_{counter:05}_"
            _write_mesh_files(node, filename_prefix, folder, stem, kinds, m, png)
            models.extend(report(f"{stem}.{kind}") for kind in kinds)
            if "obj" in kinds:
                models.append(report(f"{stem}.mtl"))
            if "obj" in kinds or "ply" in kinds:  # the texture file: also the node's image preview
                images.append(report(f"{stem}.png"))
            counter += 1
            del m, png  # one image's mesh at a time (the estimate is per image)
            pbar.update(1)
        # Every written file is reported (the runner saves what the history lists): models under "3d", the
        # texture under "images" so the node shows a preview.
        ui_out = {"3d": models, **({"images": images} if images else {})}
        return io.NodeOutput(saved[0], ui=ui_out)


def _positive_distances(node: str, mapping):
    """depth -> distance for the mesh builder, refusing distances <= 0 (the sphere would fold through itself)."""

    def r_of(dd):
        r = distance.depth_to_distance(torch.from_numpy(dd), mapping).numpy()
        if not np.isfinite(r).all() or (r <= 0).any():
            raise input_error(
                node,
                "depth_mode",
                mapping.mode,
                "maps some depth values to a distance of 0 or less (metric mode: D = 0 is distance 0)",
                "a mesh needs positive distances: use "
                "inverse, linear or sphere_displace, or turn on invert_depth if white = far",
            )
        return r

    return r_of


def _write_mesh_files(node: str, prefix: str, folder: str, stem: str, kinds, mesh, png: bytes) -> None:
    """`stem`.glb / .obj (+ .mtl + .png) / .ply (+ .png) inside the output folder; OS errors name no server path."""
    with file_guards.saving(node, "filename_prefix", prefix):
        for kind in kinds:
            path = file_guards.output_file(node, "filename_prefix", prefix, folder, f"{stem}.{kind}")
            if kind == "glb":
                core_mesh.write_glb(path, mesh, png)
            elif kind == "obj":
                core_mesh.write_obj(path, mesh, png)  # + .mtl + .png (the texture)
            else:
                if "obj" not in kinds:
                    texture = file_guards.output_file(node, "filename_prefix", prefix, folder, f"{stem}.png")
                    with open(texture, "wb") as f:
                        f.write(png)
                core_mesh.write_ply(path, mesh, f"{stem}.png")


MESH_NODES = [SaveDepthMesh]
