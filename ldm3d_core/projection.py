"""Equirectangular <-> perspective and cubemap projections, pure torch (docs/sphere360.md).

Conventions (the same as ``ods``):
    World axes x right, y up, z forward. A unit direction d has azimuth ``alpha = atan2(d_x, d_z)`` (+ = right,
    0 = image centre) and elevation ``beta = asin(d_y)`` (+ = up).
    Equirect H x W, pixel centres: ``alpha(x) = ((x + 0.5) / W - 0.5) * 2 pi``,
    ``beta(y) = (0.5 - (y + 0.5) / H) * pi``.
    Longitude wraps (column -1 is column W - 1); across a pole, row -1 at column x is row 0 at column x + W / 2
    (the same point seen from the other side), so sampling near the poles is continuous. W must be even.
    A perspective view (``View``) is a pinhole camera with square pixels: ``fov_deg`` is the horizontal field of
    view, pixel (i, j) (row, column) has camera coordinates ``((j + 0.5 - w / 2) / f, (h / 2 - i - 0.5) / f, 1)``
    with ``f = (w / 2) / tan(fov / 2)``; the camera is turned by ``roll`` about its axis (+ = clockwise as the
    viewer sees it: its up vector leans right), then ``pitch`` (+ = looks up), then ``yaw`` (+ = looks right).
    Images are ``[B, C, H, W]`` (views ``[V, B, C, h, w]``); depth and masks are images with C = 1 (use
    ``mode="nearest"`` for masks). Perspective depth is z-depth, equirect depth is ray distance
    (``zdepth_to_distance``).
Sampling is backward in both directions (every output pixel looks up its source), so there are no holes; fusing
views onto a canvas is ``sphere_canvas``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

CUBE_FACES = ("front", "right", "back", "left", "up", "down")  # +z, +x, -z, -x, +y, -y
_CUBE_ANGLES = {"front": (0, 0), "right": (90, 0), "back": (180, 0), "left": (-90, 0), "up": (0, 90), "down": (0, -90)}


@dataclass(frozen=True)
class View:
    """A perspective camera at the sphere's centre: angles in degrees, size in pixels (height, width)."""

    yaw: float
    pitch: float
    fov_deg: float
    size: tuple[int, int]
    roll: float = 0.0

    def __post_init__(self):
        if not 0 < self.fov_deg < 180:
            raise ValueError(f"fov_deg = {self.fov_deg!r}: a perspective view needs 0 < fov < 180 degrees")
        if min(self.size) < 1:
            raise ValueError(f"size = {self.size!r}: height and width must be >= 1")

    @property
    def focal(self) -> float:
        """Focal length in pixels."""
        return (self.size[1] / 2) / math.tan(math.radians(self.fov_deg) / 2)

    def rotation(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """3x3 matrix taking camera coordinates (right, up, forward) to world coordinates."""
        y, p, r = (math.radians(a) for a in (self.yaw, self.pitch, self.roll))
        yaw = torch.tensor([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]], dtype=dtype)
        pitch = torch.tensor([[1, 0, 0], [0, math.cos(p), math.sin(p)], [0, -math.sin(p), math.cos(p)]], dtype=dtype)
        roll = torch.tensor([[math.cos(r), math.sin(r), 0], [-math.sin(r), math.cos(r), 0], [0, 0, 1]], dtype=dtype)
        return yaw @ pitch @ roll


def cube_face_views(face_size: int) -> list[View]:
    """The six 90-degree cube faces in ``CUBE_FACES`` order (front = +z, right = +x, up = +y)."""
    return [View(*_CUBE_ANGLES[name], fov_deg=90.0, size=(face_size, face_size)) for name in CUBE_FACES]


# -- directions --------------------------------------------------------------------------------------------------
def equirect_directions(
    height: int, width: int, dtype: torch.dtype = torch.float64, device: torch.device | None = None
) -> torch.Tensor:
    """[H, W, 3] unit directions of the equirect pixel centres."""
    x = torch.arange(width, dtype=dtype, device=device)
    y = torch.arange(height, dtype=dtype, device=device)
    alpha = ((x + 0.5) / width - 0.5) * 2 * math.pi
    beta = (0.5 - (y + 0.5) / height) * math.pi
    beta, alpha = torch.meshgrid(beta, alpha, indexing="ij")
    return torch.stack((beta.cos() * alpha.sin(), beta.sin(), beta.cos() * alpha.cos()), dim=-1)


def equirect_pixel(directions: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[..., 2] continuous (x, y) equirect pixel coordinates (centres at integers) of directions [..., 3]."""
    d = directions / directions.norm(dim=-1, keepdim=True)
    alpha = torch.atan2(d[..., 0], d[..., 2])
    beta = torch.asin(d[..., 1].clamp(-1.0, 1.0))
    return torch.stack(((alpha / (2 * math.pi) + 0.5) * width - 0.5, (0.5 - beta / math.pi) * height - 0.5), dim=-1)


def view_directions(view: View, dtype: torch.dtype = torch.float64, device: torch.device | None = None) -> torch.Tensor:
    """[h, w, 3] world directions (not normalised: camera z = 1) through the view's pixel centres."""
    h, w = view.size
    f = view.focal
    cols = (torch.arange(w, dtype=dtype, device=device) + 0.5 - w / 2) / f
    rows = (h / 2 - torch.arange(h, dtype=dtype, device=device) - 0.5) / f
    yc, xc = torch.meshgrid(rows, cols, indexing="ij")
    camera = torch.stack((xc, yc, torch.ones_like(xc)), dim=-1)
    return camera @ view.rotation(dtype).to(device).T


def view_pixel(directions: torch.Tensor, view: View) -> tuple[torch.Tensor, torch.Tensor]:
    """Continuous (column, row) view pixel coordinates [..., 2] of world directions [..., 3], and whether the
    direction is in front of the camera and inside the image (pixel edges included)."""
    camera = directions @ view.rotation(directions.dtype).to(directions.device)
    z = camera[..., 2]
    safe = torch.where(z > 1e-9, z, torch.ones_like(z))
    h, w = view.size
    f = view.focal
    col = camera[..., 0] / safe * f + w / 2 - 0.5
    row = h / 2 - camera[..., 1] / safe * f - 0.5
    inside = (z > 1e-9) & (col >= -0.5) & (col <= w - 0.5) & (row >= -0.5) & (row <= h - 0.5)
    return torch.stack((col, row), dim=-1), inside


# -- sampling ----------------------------------------------------------------------------------------------------
def _pad_sphere(image: torch.Tensor) -> torch.Tensor:
    """[B, C, H + 2, W + 2]: one row across each pole (the row itself, turned by half a turn) and one wrapped
    column on each side, so bilinear sampling is continuous everywhere on the sphere."""
    width = image.shape[-1]
    if width % 2:
        raise ValueError(f"equirect width {width} must be even (the row across a pole is half a turn away)")
    top = image[..., :1, :].roll(width // 2, dims=-1)
    bottom = image[..., -1:, :].roll(width // 2, dims=-1)
    padded = torch.cat((top, image, bottom), dim=-2)
    return torch.cat((padded[..., -1:], padded, padded[..., :1]), dim=-1)


def _grid(pixels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """grid_sample coordinates (align_corners=False) of pixel coordinates in an image of height x width."""
    return torch.stack(((2 * pixels[..., 0] + 1) / width - 1, (2 * pixels[..., 1] + 1) / height - 1), dim=-1)


def sample_equirect(image: torch.Tensor, directions: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Sample an equirect image [B, C, H, W] in directions [h, w, 3]: [B, C, h, w]."""
    batch, _, height, width = image.shape
    xy = equirect_pixel(directions, height, width)
    pixels = xy + 1  # into the padded image; x is in (-0.5, W - 0.5], y in [-0.5, H - 0.5]
    grid = _grid(pixels, height + 2, width + 2).to(image.dtype).expand(batch, -1, -1, -1)
    return F.grid_sample(_pad_sphere(image), grid, mode=mode, padding_mode="border", align_corners=False)


def equirect_to_perspective(image: torch.Tensor, view: View, mode: str = "bilinear") -> torch.Tensor:
    """The view [B, C, h, w] of an equirect image [B, C, H, W]."""
    return sample_equirect(image, view_directions(view, device=image.device), mode)


def view_weight(pixels: torch.Tensor, inside: torch.Tensor, view: View, kind: str) -> torch.Tensor:
    """Fusion weight of a view at its pixel coordinates: "uniform" 1, "feather" (1 - |u|)(1 - |v|) with u, v in
    [-1, 1] across the image (falls to 0 at the border), "axis" the cosine to the view axis (for "nearest")."""
    h, w = view.size
    if kind == "uniform":
        weight = torch.ones_like(pixels[..., 0])
    elif kind == "feather":
        u = (2 * pixels[..., 0] + 1) / w - 1
        v = (2 * pixels[..., 1] + 1) / h - 1
        weight = (1 - u.abs()).clamp_min(0) * (1 - v.abs()).clamp_min(0) + 1e-6
    elif kind == "axis":
        f = view.focal
        xc = (pixels[..., 0] + 0.5 - w / 2) / f
        yc = (h / 2 - pixels[..., 1] - 0.5) / f
        weight = 1 / torch.sqrt(1 + xc**2 + yc**2)
    else:
        raise ValueError(f"weight {kind!r}: choose uniform, feather or axis")
    return torch.where(inside, weight, torch.zeros_like(weight))


def coverage(cameras: list[View], height: int, width: int) -> torch.Tensor:
    """[H, W] how many views see each equirect pixel centre."""
    directions = equirect_directions(height, width)
    count = torch.zeros(height, width, dtype=torch.int64)
    for camera in cameras:
        count += view_pixel(directions, camera)[1].long()
    return count


def rotate_equirect(
    image: torch.Tensor, yaw: float, pitch: float, roll: float = 0.0, mode: str = "bilinear"
) -> torch.Tensor:
    """The equirect [B, C, H, W] turned so that its centre shows what a camera with this yaw, pitch and roll
    (``View`` conventions) sees at its centre: output(d) = input(R d). A yaw of 360 k / W degrees is a roll of the
    columns by -k."""
    height, width = image.shape[-2:]
    rotation = View(yaw, pitch, 90.0, (1, 1), roll).rotation().to(image.device)
    return sample_equirect(image, equirect_directions(height, width, device=image.device) @ rotation.T, mode)


# -- depth -------------------------------------------------------------------------------------------------------
def zdepth_to_distance(depth: torch.Tensor, view: View) -> torch.Tensor:
    """Ray distance [..., h, w] from a view's z-depth [..., h, w]: r = z * |(x_c, y_c, 1)|."""
    return depth * view_directions(view, depth.dtype, depth.device).norm(dim=-1)


def distance_to_zdepth(distance: torch.Tensor, view: View) -> torch.Tensor:
    """A view's z-depth from ray distance (the inverse of ``zdepth_to_distance``)."""
    return distance / view_directions(view, distance.dtype, distance.device).norm(dim=-1)
