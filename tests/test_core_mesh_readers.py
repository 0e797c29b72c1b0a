"""The GLB / OBJ / PLY files of ldm3d_core.mesh read back by independent readers from pip (test-only): trimesh for the
geometry, colours and textures of every format, pygltflib for the glTF document (accessors, buffer views, material,
texture, embedded PNG)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from ldm3d_core.mesh import build_sphere_mesh, png_bytes, write_glb, write_obj, write_ply

trimesh = pytest.importorskip("trimesh", reason="test-only reader: pip install -e .[test]")
pygltflib = pytest.importorskip("pygltflib", reason="test-only reader: pip install -e .[test]")

H, W = 16, 32
MW, MH = 12, 7
N_VERTS = (MW + 1) * MH


@pytest.fixture(scope="module")
def mesh():
    rng = np.random.default_rng(7)
    depth, image = rng.random((H, W)), rng.random((H, W, 3))
    return build_sphere_mesh(depth, image, lambda d: 6.0 - 4.0 * d, MW, MH), image


def _faces_expected():
    # the grid has MH rows of MW + 1 vertices (seam duplicated); pole rows are fans: one triangle per column
    return 2 * MW * (MH - 1) - 2 * MW


def _assert_same_triangles(loaded, m, atol):
    """Readers may drop the two vertices no triangle uses (the seam copies of the poles): compare triangles."""
    assert len(loaded.faces) == _faces_expected() and len(np.unique(loaded.faces)) == N_VERTS - 2
    assert np.allclose(loaded.vertices[loaded.faces], m.positions[m.faces], atol=atol)
    assert np.allclose(loaded.bounds, [m.positions.min(0), m.positions.max(0)], atol=atol)


def test_glb_document_read_by_pygltflib(mesh, tmp_path):
    m, image = mesh
    path = write_glb(str(tmp_path / "pano.glb"), m, png_bytes(image))
    gltf = pygltflib.GLTF2().load(path)
    blob = gltf.binary_blob()
    assert gltf.asset.version == "2.0" and len(gltf.meshes) == 1 and len(gltf.meshes[0].primitives) == 1
    prim = gltf.meshes[0].primitives[0]
    assert prim.mode == pygltflib.TRIANGLES

    def read(index, dtype, comps):
        acc = gltf.accessors[index]
        view = gltf.bufferViews[acc.bufferView]
        assert view.byteOffset % 4 == 0 and view.byteOffset + view.byteLength <= len(blob)
        raw = blob[view.byteOffset + (acc.byteOffset or 0) : view.byteOffset + view.byteLength]
        return acc, np.frombuffer(raw, dtype=dtype, count=acc.count * comps).reshape(acc.count, comps)

    acc_p, pos = read(prim.attributes.POSITION, "<f4", 3)
    acc_uv, uv = read(prim.attributes.TEXCOORD_0, "<f4", 2)
    acc_i, idx = read(prim.indices, "<u4", 1)
    assert (acc_p.type, acc_p.componentType) == (pygltflib.VEC3, pygltflib.FLOAT) and acc_p.count == N_VERTS
    assert (acc_uv.type, acc_uv.componentType) == (pygltflib.VEC2, pygltflib.FLOAT) and acc_uv.count == N_VERTS
    assert (acc_i.type, acc_i.componentType) == (pygltflib.SCALAR, pygltflib.UNSIGNED_INT)
    assert acc_i.count == 3 * _faces_expected() and len(np.unique(idx)) == N_VERTS - 2 and idx.max() < N_VERTS
    assert np.allclose(acc_p.min, pos.min(0)) and np.allclose(acc_p.max, pos.max(0))  # required for POSITION
    assert np.allclose(np.linalg.norm(pos, axis=1), m.radius, rtol=1e-6)
    assert uv.min() >= 0 and uv.max() <= 1 and np.allclose(uv[: MW + 1, 1], 0)  # glTF: top-left origin, north row
    material = gltf.materials[prim.material]
    texture = gltf.textures[material.pbrMetallicRoughness.baseColorTexture.index]
    picture = gltf.images[texture.source]
    assert picture.mimeType == "image/png" and "KHR_materials_unlit" in gltf.extensionsUsed
    view = gltf.bufferViews[picture.bufferView]
    decoded = np.asarray(Image.open(io.BytesIO(blob[view.byteOffset : view.byteOffset + view.byteLength])))
    assert np.array_equal(decoded, np.round(image * 255).astype(np.uint8))


def test_glb_geometry_and_texture_read_by_trimesh(mesh, tmp_path):
    m, image = mesh
    path = write_glb(str(tmp_path / "pano.glb"), m, png_bytes(image))
    scene = trimesh.load(path, process=False)
    (geometry,) = scene.geometry.values()
    assert len(geometry.vertices) == N_VERTS and len(geometry.faces) == _faces_expected()
    assert np.allclose(geometry.bounds, [m.positions.min(0), m.positions.max(0)], atol=1e-6)
    assert np.allclose(np.linalg.norm(geometry.vertices, axis=1), m.radius, rtol=1e-6)
    texture = np.asarray(geometry.visual.material.baseColorTexture.convert("RGB"))
    assert np.array_equal(texture, np.round(image * 255).astype(np.uint8))
    # inward faces: seen from the centre (the viewer), every triangle's normal points at the centre
    centres = geometry.triangles_center
    assert np.all((geometry.face_normals * centres).sum(1) < 0)


def test_obj_with_mtl_and_png_read_by_trimesh(mesh, tmp_path):
    m, image = mesh
    write_obj(str(tmp_path / "pano.obj"), m, png_bytes(image))
    loaded = trimesh.load(str(tmp_path / "pano.obj"), process=False)
    _assert_same_triangles(loaded, m, atol=2e-6)
    uv = loaded.visual.uv[loaded.faces]
    assert np.allclose(uv[..., 0], m.uv[m.faces][..., 0], atol=1e-6)
    assert np.allclose(uv[..., 1], 1 - m.uv[m.faces][..., 1], atol=1e-6)  # OBJ: bottom-left origin
    texture = np.asarray(loaded.visual.material.image.convert("RGB"))
    assert np.array_equal(texture, np.round(image * 255).astype(np.uint8))


def test_ply_read_by_trimesh(mesh, tmp_path):
    m, _image = mesh
    write_ply(str(tmp_path / "pano.ply"), m)
    loaded = trimesh.load(str(tmp_path / "pano.ply"), process=False)
    _assert_same_triangles(loaded, m, atol=0)
    raw = loaded.metadata["_ply_raw"]["vertex"]["data"]  # the vertex table as trimesh parsed it: every vertex
    assert len(raw) == N_VERTS and np.allclose(np.stack([raw["x"], raw["y"], raw["z"]], 1), m.positions, atol=0)
    assert np.array_equal(np.stack([raw["red"], raw["green"], raw["blue"]], 1), m.colors)
    assert np.allclose(raw["t"], 1 - m.uv[:, 1]) and np.allclose(raw["s"], m.uv[:, 0])  # PLY: bottom-left origin
