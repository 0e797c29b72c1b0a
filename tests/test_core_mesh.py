"""Displaced-sphere mesh (P14) and its GLB / OBJ / PLY files, parsed here with struct and plain text."""

from __future__ import annotations

import io
import json
import math
import struct

import numpy as np
import pytest
from PIL import Image

from ldm3d_core.mesh import build_sphere_mesh, glb_bytes, png_bytes, sphere_faces, write_glb, write_obj, write_ply

H, W = 16, 32
MW, MH = 12, 7


def _data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((H, W)), rng.random((H, W, 3))


def _r_of(d):
    return 6.0 - 4.0 * d


def _bilinear_oracle(arr, u, t):
    """Plain scalar bilinear sample with x wrap and y clamp (pixel centres at +0.5)."""
    x = u * W - 0.5
    y = min(max(t * H - 0.5, 0.0), H - 1.0)
    x0, y0 = math.floor(x), math.floor(y)
    fx, fy = x - x0, y - y0
    y1 = min(y0 + 1, H - 1)

    def px(yy, xx):
        return arr[yy][xx % W]

    top = px(y0, x0) * (1 - fx) + px(y0, x0 + 1) * fx
    bot = px(y1, x0) * (1 - fx) + px(y1, x0 + 1) * fx
    return top * (1 - fy) + bot * fy


def test_p14_vertices_seam_and_radii():
    d, img = _data()
    m = build_sphere_mesh(d, img, _r_of, MW, MH)
    assert m.positions.shape == ((MW + 1) * MH, 3)
    grid = m.positions.reshape(MH, MW + 1, 3)
    assert np.array_equal(grid[:, 0], grid[:, MW])  # duplicated seam column shares positions
    uv = m.uv.reshape(MH, MW + 1, 2)
    assert np.all(uv[:, 0, 0] == 0) and np.all(uv[:, MW, 0] == 1)
    for j in range(MH):
        for i in range(MW + 1):
            u, t = i / MW, j / (MH - 1)
            r = _r_of(_bilinear_oracle(d, u if i < MW else 0.0, t))
            p = grid[j, i].astype(np.float64)
            assert abs(np.linalg.norm(p) - r) < 1e-5
            alpha, beta = (u - 0.5) * 2 * math.pi, (0.5 - t) * math.pi
            if 0 < j < MH - 1:
                expect = r * np.array(
                    [math.cos(beta) * math.sin(alpha), math.sin(beta), -math.cos(beta) * math.cos(alpha)]
                )
                assert np.allclose(p, expect, atol=1e-5)
            assert np.allclose(uv[j, i], (u, t), atol=1e-7)
    # the image centre (u = 0.5) looks down -Z, u = 0.75 is +X (right)
    assert grid[MH // 2, MW // 2, 2] < 0 and grid[MH // 2, 3 * MW // 4, 0] > 0
    assert np.allclose(grid[0, :, 1], m.radius.reshape(MH, -1)[0]) and np.all(grid[-1, :, 1] < 0)


def test_faces_inward_and_non_degenerate():
    d, img = _data(1)
    m = build_sphere_mesh(d, img, lambda x: np.full_like(x, 3.0), MW, MH)
    p = m.positions.astype(np.float64)
    f = m.faces.astype(np.int64)
    assert len(f) == 2 * MW * (MH - 1) - 2 * MW
    n = np.cross(p[f[:, 1]] - p[f[:, 0]], p[f[:, 2]] - p[f[:, 0]])
    assert np.all(np.linalg.norm(n, axis=1) > 1e-6)
    assert np.all((n * p[f].mean(1)).sum(1) < 0)  # counter-clockwise seen from the centre
    assert np.array_equal(sphere_faces(MW, MH), m.faces)


def test_culling_drops_exactly_the_discontinuous_triangles():
    d = np.zeros((H, W))
    d[:, W // 2 :] = 1.0
    img = np.zeros((H, W, 3))
    full = build_sphere_mesh(d, img, _r_of, MW, MH)
    culled = build_sphere_mesh(d, img, _r_of, MW, MH, cull_tau=0.2)
    keep = [
        tri for tri in full.faces.tolist() if max(full.radius[k] for k in tri) <= min(full.radius[k] for k in tri) * 1.2
    ]
    assert culled.faces.tolist() == keep and 0 < len(keep) < len(full.faces)


def _parse_glb(data):
    magic, version, total = struct.unpack_from("<III", data, 0)
    assert (magic, version, total) == (0x46546C67, 2, len(data))
    jlen, jtype = struct.unpack_from("<II", data, 12)
    assert jtype == 0x4E4F534A and jlen % 4 == 0
    doc = json.loads(data[20 : 20 + jlen])
    blen, btype = struct.unpack_from("<II", data, 20 + jlen)
    assert btype == 0x004E4942 and blen % 4 == 0 and 28 + jlen + blen == total
    return doc, data[28 + jlen :]


def test_glb_structure_accessors_bounds_and_texture():
    d, img = _data(2)
    m = build_sphere_mesh(d, img, _r_of, MW, MH)
    doc, bin_chunk = _parse_glb(glb_bytes(m, png_bytes(img)))
    assert doc["asset"]["version"] == "2.0" and doc["buffers"][0]["byteLength"] == len(bin_chunk)
    prim = doc["meshes"][0]["primitives"][0]
    acc = doc["accessors"]
    views = doc["bufferViews"]

    def read(i, dtype, comps):
        a = acc[i]
        v = views[a["bufferView"]]
        assert v["byteOffset"] % 4 == 0 and v["byteOffset"] + v["byteLength"] <= len(bin_chunk)
        arr = np.frombuffer(bin_chunk, dtype=dtype, count=a["count"] * comps, offset=v["byteOffset"])
        return arr.reshape(a["count"], comps) if comps > 1 else arr

    pos = read(prim["attributes"]["POSITION"], "<f4", 3)
    uv = read(prim["attributes"]["TEXCOORD_0"], "<f4", 2)
    idx = read(prim["indices"], "<u4", 1)
    n = (MW + 1) * MH
    assert acc[prim["attributes"]["POSITION"]]["count"] == n and acc[prim["indices"]]["count"] == len(m.faces) * 3
    assert acc[prim["attributes"]["POSITION"]]["componentType"] == 5126
    assert acc[prim["indices"]]["componentType"] == 5125 and idx.max() < n
    assert np.allclose(acc[0]["min"], pos.min(0)) and np.allclose(acc[0]["max"], pos.max(0))
    assert np.array_equal(pos, m.positions)
    # glTF UVs: origin top-left, so the top row (north pole, +Y) has v = 0
    assert np.all(uv[: MW + 1, 1] == 0) and np.all(pos[: MW + 1, 1] > 0)
    image = doc["images"][
        doc["textures"][doc["materials"][prim["material"]]["pbrMetallicRoughness"]["baseColorTexture"]["index"]][
            "source"
        ]
    ]
    v = views[image["bufferView"]]
    tex = np.asarray(Image.open(io.BytesIO(bin_chunk[v["byteOffset"] : v["byteOffset"] + v["byteLength"]])))
    assert image["mimeType"] == "image/png" and tex.shape == (H, W, 3)
    assert np.array_equal(tex, np.round(img * 255).astype(np.uint8))


def test_obj_mtl_png_and_ply(tmp_path):
    d, img = _data(3)
    m = build_sphere_mesh(d, img, _r_of, MW, MH)
    png = png_bytes(img)
    paths = write_obj(str(tmp_path / "s.obj"), m, png)
    assert [p.split("/")[-1] for p in paths] == ["s.obj", "s.mtl", "s.png"]
    v, vt, f = [], [], []
    for line in (tmp_path / "s.obj").read_text().splitlines():
        parts = line.split()
        if parts and parts[0] == "v":
            v.append([float(x) for x in parts[1:]])
        elif parts and parts[0] == "vt":
            vt.append([float(x) for x in parts[1:]])
        elif parts and parts[0] == "f":
            f.append([[int(k) for k in c.split("/")] for c in parts[1:]])
    assert len(v) == len(vt) == (MW + 1) * MH and len(f) == len(m.faces)
    assert np.allclose(v, m.positions, atol=2e-6)
    assert np.allclose(np.array(vt)[:, 1], 1 - m.uv[:, 1], atol=1e-6)  # OBJ: origin bottom-left
    assert np.array(vt)[0, 1] == pytest.approx(1.0)  # north pole row at the top of the texture
    assert all(a == b for face in f for a, b in face) and np.array_equal(np.array(f)[:, :, 0] - 1, m.faces)
    assert "map_Kd s.png" in (tmp_path / "s.mtl").read_text()

    write_ply(str(tmp_path / "s.ply"), m, "s.png")
    data = (tmp_path / "s.ply").read_bytes()
    head, body = data.split(b"end_header\n", 1)
    assert b"format binary_little_endian 1.0" in head and f"element vertex {len(m.positions)}".encode() in head
    vdt = np.dtype([("p", "<f4", 3), ("c", "u1", 3), ("st", "<f4", 2)])
    verts = np.frombuffer(body, dtype=vdt, count=len(m.positions))
    faces = np.frombuffer(body, dtype=np.dtype([("k", "u1"), ("i", "<i4", 3)]), offset=verts.nbytes)
    assert len(faces) == len(m.faces) and np.all(faces["k"] == 3) and np.array_equal(faces["i"], m.faces)
    assert np.array_equal(verts["p"], m.positions) and np.allclose(verts["st"][:, 1], 1 - m.uv[:, 1])
    j, i = 3, 5
    k = j * (MW + 1) + i
    expect = [_bilinear_oracle(img[..., c], i / MW, j / (MH - 1)) for c in range(3)]
    assert np.allclose(verts["c"][k], np.round(np.array(expect) * 255), atol=0)


def test_glb_written_and_errors(tmp_path):
    d, img = _data(4)
    d0 = d.copy()
    m = build_sphere_mesh(d, img, _r_of, MW, MH)
    write_glb(str(tmp_path / "x.glb"), m, png_bytes(img))
    _parse_glb((tmp_path / "x.glb").read_bytes())
    assert np.array_equal(d, d0)
    with pytest.raises(ValueError, match="radii"):
        build_sphere_mesh(d, img, lambda x: np.where(x > 0.5, np.inf, 1.0), MW, MH)
    with pytest.raises(ValueError, match="sizes differ"):
        build_sphere_mesh(d[:, :-1], img, _r_of, MW, MH)
    with pytest.raises(ValueError, match=">= 3"):
        build_sphere_mesh(d, img, _r_of, 2, MH)
