"""Displaced-sphere mesh of an equirect RGB + depth (DepthFusion / THREE.6DOF style) and GLB/OBJ/PLY writers.

Convention:
    Vertex grid of ``mesh_h`` rows x ``(mesh_w + 1)`` columns; column ``mesh_w`` duplicates column 0 (the 0/360
    seam) so that UVs never wrap: ``u = i / mesh_w`` in [0, 1], ``t = j / (mesh_h - 1)`` in [0, 1] from the top
    row (north pole, collapsed to one point) to the bottom row (south pole). Angles ``alpha = (u - 0.5) 2 pi``
    (0 = image centre, + = right) and ``beta = (0.5 - t) pi``. Positions use the Spherical Video V2 mesh axes,
    **-Z forward, +X right, +Y up**: ``P = r (cos beta sin alpha, sin beta, -cos beta cos alpha)``.
    The equirect is sampled bilinearly at ``x = u W - 0.5`` (wrapping) and ``y = t H - 0.5`` (clamped), i.e.
    with the pixel-centre convention of ``ods``. Triangles wind counter-clockwise seen from the sphere centre
    (inward-facing); degenerate pole triangles are not emitted.
    UV per format: glTF (origin top-left) ``(u, t)``; OBJ and PLY (OpenGL, origin bottom-left) ``(u, 1 - t)``.

Memory: the mesh itself is 55 bytes per vertex (positions, UVs, colours, radii, two triangles); everything else is
computed and written in blocks of about ``CHUNK`` vertices or faces, so that no full-size temporary exists.
"""

from __future__ import annotations

import io
import json
import math
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from PIL import Image

CHUNK = 1 << 20  # vertices, faces or pixels per block of work


@dataclass
class SphereMesh:
    """positions [N, 3] float32 metres, uv [N, 2] float32 (u, t) top-left origin, colors [N, 3] uint8,
    radius [N] float64, faces [F, 3] uint32, grid (mesh_h, mesh_w + 1)."""

    positions: np.ndarray
    uv: np.ndarray
    colors: np.ndarray
    radius: np.ndarray
    faces: np.ndarray
    grid: tuple[int, int]


def sample_equirect(values: np.ndarray, u: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Bilinear sample of ``values`` [H, W, C] at texture coords (u, t) (top-left origin), wrapping in x.

    Convention: ``x = u W - 0.5`` modulo W, ``y = t H - 0.5`` clamped to [0, H - 1]. Returns [..., C] float64.
    """
    height, width = values.shape[:2]
    x = np.asarray(u, dtype=np.float64) * width - 0.5
    y = np.clip(np.asarray(t, dtype=np.float64) * height - 0.5, 0.0, height - 1.0)
    x0 = np.floor(x)
    y0 = np.floor(y)
    fx = (x - x0)[..., None]
    fy = (y - y0)[..., None]
    x0i = np.mod(x0.astype(np.int64), width)
    x1i = np.mod(x0i + 1, width)
    y0i = y0.astype(np.int64)
    y1i = np.minimum(y0i + 1, height - 1)
    v = np.asarray(values)  # gathered values are promoted to float64 below (no float64 copy of the whole image)
    top = v[y0i, x0i] * (1 - fx) + v[y0i, x1i] * fx
    bot = v[y1i, x0i] * (1 - fx) + v[y1i, x1i] * fx
    return top * (1 - fy) + bot * fy


def sphere_faces(mesh_w: int, mesh_h: int) -> np.ndarray:
    """Inward-facing triangles of the (mesh_h) x (mesh_w + 1) grid without the degenerate pole triangles.

    Order: the (a, c, b) triangles of rows 1 .. mesh_h - 2, then the (b, c, d) triangles of rows 0 .. mesh_h - 3,
    each row by column, where a = j * (mesh_w + 1) + i, b = a + 1, c = a + mesh_w + 1, d = c + 1.
    """
    cols = mesh_w + 1
    per_row = mesh_w
    faces = np.empty((2 * per_row * (mesh_h - 2), 3), dtype=np.uint32)
    half = per_row * (mesh_h - 2)
    step = max(1, CHUNK // per_row)
    i = np.arange(mesh_w, dtype=np.int64)
    for j0 in range(0, mesh_h - 2, step):
        j = np.arange(j0, min(j0 + step, mesh_h - 2), dtype=np.int64)[:, None]
        rows = slice(j0 * per_row, (j0 + len(j)) * per_row)
        a1 = (j + 1) * cols + i  # tri1 rows start at 1: row 0's a and b are both the north pole
        faces[rows] = np.stack([a1, a1 + cols, a1 + 1], -1).reshape(-1, 3)
        a2 = j * cols + i  # tri2 rows end at mesh_h - 3: the last row's c and d are both the south pole
        faces[half + rows.start : half + rows.stop] = np.stack([a2 + 1, a2 + cols, a2 + cols + 1], -1).reshape(-1, 3)
    return faces


def build_sphere_mesh(
    depth: np.ndarray,
    image: np.ndarray,
    to_distance: Callable[[np.ndarray], np.ndarray],
    mesh_w: int = 1024,
    mesh_h: int = 512,
    cull_tau: float | None = None,
) -> SphereMesh:
    """Displaced sphere of an equirect (see the module Convention), built in blocks of rows.

    Args:
        depth: D [H, W] in [0, 1] (white = near).
        image: [H, W, 3] float in [0, 1].
        to_distance: maps sampled D (float64 array) to radius in metres (e.g. ``distance.depth_to_distance``);
            called once per block of rows.
        mesh_w, mesh_h: grid size (>= 3 each); vertices = (mesh_w + 1) * mesh_h.
        cull_tau: if set, drop triangles with ``max(r) / min(r) > 1 + cull_tau`` (depth discontinuities).
    """
    if mesh_w < 3 or mesh_h < 3:
        raise ValueError(f"mesh size {mesh_w}x{mesh_h}: both must be >= 3")
    if depth.shape[:2] != image.shape[:2]:
        raise ValueError(f"depth {depth.shape[:2]} and image {image.shape[:2]} sizes differ")
    cols = mesh_w + 1
    u = (np.arange(cols, dtype=np.float64) / mesh_w)[None, :]
    t_all = np.arange(mesh_h, dtype=np.float64) / (mesh_h - 1)
    alpha = (u - 0.5) * 2.0 * math.pi
    sin_a, cos_a = np.sin(alpha), np.cos(alpha)
    depth3 = np.asarray(depth)[..., None]
    positions = np.empty((mesh_h * cols, 3), dtype=np.float32)
    uv = np.empty((mesh_h * cols, 2), dtype=np.float32)
    colors = np.empty((mesh_h * cols, 3), dtype=np.uint8)
    radius = np.empty((mesh_h, cols), dtype=np.float64)
    step = max(1, CHUNK // cols)
    for j0 in range(0, mesh_h, step):
        j1 = min(j0 + step, mesh_h)
        t = t_all[j0:j1, None]
        flat = slice(j0 * cols, j1 * cols)
        d = sample_equirect(depth3, u, t)[..., 0]
        r = np.asarray(to_distance(d), dtype=np.float64)
        if not np.isfinite(r).all() or (r <= 0).any():
            raise ValueError("the depth mapping gave non-finite or non-positive radii; use a finite far distance")
        r[:, -1] = r[:, 0]  # exact seam duplication
        radius[j0:j1] = r
        beta = (0.5 - t) * math.pi
        cos_b = np.cos(beta)
        pos = np.stack([cos_b * sin_a, np.broadcast_to(np.sin(beta), r.shape), -cos_b * cos_a], -1) * r[..., None]
        pos[:, -1] = pos[:, 0]
        if j0 == 0:
            pos[0] = (0.0, 1.0, 0.0) * r[0, :, None]  # collapsed poles
        if j1 == mesh_h:
            pos[-1] = (0.0, -1.0, 0.0) * r[-1, :, None]
        positions[flat] = pos.reshape(-1, 3)
        rgb = sample_equirect(image, u, t)
        colors[flat] = np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8).reshape(-1, 3)
        uv[flat, 0] = np.broadcast_to(u, r.shape).reshape(-1)
        uv[flat, 1] = np.broadcast_to(t, r.shape).reshape(-1)
    faces = sphere_faces(mesh_w, mesh_h)
    rflat = radius.reshape(-1)
    if cull_tau is not None:
        keep = np.empty(len(faces), dtype=bool)
        for f0 in range(0, len(faces), CHUNK):
            rf = rflat[faces[f0 : f0 + CHUNK]]
            keep[f0 : f0 + CHUNK] = rf.max(1) <= rf.min(1) * (1.0 + cull_tau)
        faces = faces[keep]
    return SphereMesh(positions, uv, colors, rflat, faces, (mesh_h, cols))


def png_bytes(image: np.ndarray) -> bytes:
    """Encode [H, W, 3] float [0, 1] as 8-bit PNG bytes."""
    image = np.asarray(image)
    arr = np.empty(image.shape, dtype=np.uint8)
    step = max(1, CHUNK // max(1, image.shape[1]))
    for y in range(0, image.shape[0], step):  # float64 math in blocks of rows
        arr[y : y + step] = np.clip(np.round(np.asarray(image[y : y + step], dtype=np.float64) * 255.0), 0, 255)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=4)
    return buf.getvalue()


def _pad4(data: bytes, fill: bytes = b"\0") -> bytes:
    return data + fill * (-len(data) % 4)


def glb_bytes(mesh: SphereMesh, texture_png: bytes, name: str = "ldm3d_sphere") -> bytes:
    """A binary glTF 2.0 with positions, TEXCOORD_0 (top-left origin), uint32 indices and the embedded PNG
    texture on an unlit, double-sided material (viewer at the centre)."""
    buf = io.BytesIO()
    _write_glb(buf, mesh, texture_png, name)
    return buf.getvalue()


def _float_accessor(buffer_view: int, values: np.ndarray, kind: str) -> dict:
    """The glTF accessor of a float32 vertex attribute [n, k] (positions need min/max; uv get them too)."""
    return {
        "bufferView": buffer_view,
        "componentType": 5126,
        "count": int(values.shape[0]),
        "type": kind,
        "min": values.min(0).astype(float).tolist(),
        "max": values.max(0).astype(float).tolist(),
    }


def _write_glb(handle: BinaryIO, mesh: SphereMesh, texture_png: bytes, name: str) -> None:
    """``glb_bytes`` streamed into a binary file object: the arrays are written as they are, never copied."""
    parts = [
        np.ascontiguousarray(mesh.positions, dtype="<f4"),
        np.ascontiguousarray(mesh.uv, dtype="<f4"),
        np.ascontiguousarray(mesh.faces, dtype="<u4"),
        np.frombuffer(texture_png, dtype=np.uint8),
    ]
    views, offset = [], 0
    for k, data in enumerate(parts):
        view = {"buffer": 0, "byteOffset": offset, "byteLength": data.nbytes}
        if k < 2:
            view["target"] = 34962  # ARRAY_BUFFER
        elif k == 2:
            view["target"] = 34963  # ELEMENT_ARRAY_BUFFER
        views.append(view)
        offset += data.nbytes + (-data.nbytes % 4)
    doc = {
        "asset": {"version": "2.0", "generator": "syncdiffusion-ldm3d"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0, "name": name}],
        "meshes": [
            {
                "name": name,
                "primitives": [
                    {"attributes": {"POSITION": 0, "TEXCOORD_0": 1}, "indices": 2, "material": 0, "mode": 4}
                ],
            }
        ],
        "materials": [
            {
                "name": "equirect",
                "doubleSided": True,
                "pbrMetallicRoughness": {
                    "baseColorTexture": {"index": 0},
                    "metallicFactor": 0.0,
                    "roughnessFactor": 1.0,
                },
                "extensions": {"KHR_materials_unlit": {}},
            }
        ],
        "extensionsUsed": ["KHR_materials_unlit"],
        "textures": [{"source": 0, "sampler": 0}],
        "samplers": [{"magFilter": 9729, "minFilter": 9729, "wrapS": 33071, "wrapT": 33071}],
        "images": [{"bufferView": 3, "mimeType": "image/png"}],
        "accessors": [
            _float_accessor(0, mesh.positions, "VEC3"),
            _float_accessor(1, mesh.uv, "VEC2"),
            {"bufferView": 2, "componentType": 5125, "count": int(mesh.faces.size), "type": "SCALAR"},
        ],
        "bufferViews": views,
        "buffers": [{"byteLength": offset}],
    }
    js = _pad4(json.dumps(doc, separators=(",", ":")).encode("utf-8"), b" ")
    total = 12 + 8 + len(js) + 8 + offset
    handle.write(struct.pack("<III", 0x46546C67, 2, total))
    handle.write(struct.pack("<II", len(js), 0x4E4F534A))
    handle.write(js)
    handle.write(struct.pack("<II", offset, 0x004E4942))
    for data in parts:
        handle.write(data.reshape(-1).view(np.uint8))
        handle.write(b"\0" * (-data.nbytes % 4))


def write_glb(path: str, mesh: SphereMesh, texture_png: bytes) -> str:
    with open(path, "wb") as f:
        _write_glb(f, mesh, texture_png, os.path.splitext(os.path.basename(path))[0])
    return path


def write_obj(path: str, mesh: SphereMesh, texture_png: bytes) -> list[str]:
    """Write ``<stem>.obj`` + ``<stem>.mtl`` + ``<stem>.png`` (OBJ UVs: v = 1 - t). Returns the three paths."""
    stem = os.path.splitext(path)[0]
    base = os.path.basename(stem)
    mtl_path, png_path = stem + ".mtl", stem + ".png"
    with open(png_path, "wb") as f:
        f.write(texture_png)
    with open(mtl_path, "w", encoding="utf-8") as f:
        f.write(f"newmtl equirect\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nillum 1\nmap_Kd {base}.png\n")
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"# syncdiffusion-ldm3d displaced sphere: -Z forward, +X right, +Y up\nmtllib {base}.mtl\no {base}\n")
        for k in range(0, len(mesh.positions), CHUNK):
            np.savetxt(f, mesh.positions[k : k + CHUNK], fmt="v %.6f %.6f %.6f")
        for k in range(0, len(mesh.uv), CHUNK):
            vt = mesh.uv[k : k + CHUNK].astype(np.float64)
            vt[:, 1] = 1.0 - vt[:, 1]
            np.savetxt(f, vt, fmt="vt %.7f %.7f")
        f.write("usemtl equirect\n")
        for k in range(0, len(mesh.faces), CHUNK):
            idx = mesh.faces[k : k + CHUNK].astype(np.int64) + 1
            np.savetxt(f, np.repeat(idx, 2, axis=1), fmt="f %d/%d %d/%d %d/%d")
    return [path, mtl_path, png_path]


def write_ply(path: str, mesh: SphereMesh, texture_name: str | None = None) -> str:
    """Binary little-endian PLY: x y z float, red green blue uchar (sampled colour), s t float (v = 1 - t),
    faces as ``list uchar int``. ``texture_name`` is recorded as a ``TextureFile`` comment."""
    n, nf = len(mesh.positions), len(mesh.faces)
    header = ["ply", "format binary_little_endian 1.0", "comment syncdiffusion-ldm3d: -Z forward, +X right, +Y up"]
    if texture_name:
        header.append(f"comment TextureFile {texture_name}")
    header += [
        f"element vertex {n}",
        "property float x",
        "property float y",
        "property float z",
        "property uchar red",
        "property uchar green",
        "property uchar blue",
        "property float s",
        "property float t",
        f"element face {nf}",
        "property list uchar int vertex_indices",
        "end_header",
    ]
    vdt = np.dtype([("p", "<f4", 3), ("c", "u1", 3), ("st", "<f4", 2)])
    fdt = np.dtype([("k", "u1"), ("i", "<i4", 3)])
    with open(path, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        for k in range(0, n, CHUNK):
            verts = np.empty(min(CHUNK, n - k), dtype=vdt)
            verts["p"] = mesh.positions[k : k + CHUNK]
            verts["c"] = mesh.colors[k : k + CHUNK]
            verts["st"][:, 0] = mesh.uv[k : k + CHUNK, 0]
            verts["st"][:, 1] = 1.0 - mesh.uv[k : k + CHUNK, 1]
            f.write(verts)
        for k in range(0, nf, CHUNK):
            faces = np.empty(min(CHUNK, nf - k), dtype=fdt)
            faces["k"] = 3
            faces["i"] = mesh.faces[k : k + CHUNK].astype(np.int32)
            f.write(faces)
    return path
