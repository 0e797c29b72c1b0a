"""Views <-> one equirect canvas with maps computed once (docs/sphere360.md): the fusion step of joint diffusion on
the sphere, and one-shot perspective / cubemap -> equirect.

Conventions are ``projection``'s. ``SphereCanvas`` holds, per view, where each of its pixels lands on the canvas
(to render the canvas into the view) and where each canvas pixel lands in the view with the view's fusion weight
(to fuse the views onto the canvas): backward sampling both ways, so neither side has holes.
Memory: per view one [h, w, 2] grid, one [H, W, 2] grid and one [H, W] weight (float32: 12 bytes per canvas pixel
per view; 22 views on a 2048 x 1024 canvas: about 550 MB).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .projection import (
    View,
    _grid,
    _pad_sphere,
    cube_face_views,
    equirect_directions,
    equirect_pixel,
    sample_equirect,
    view_directions,
    view_pixel,
    view_weight,
)

WEIGHTS = ("feather", "uniform", "nearest")


class SphereCanvas:
    """Maps between views ``cameras`` and an equirect canvas of ``height`` x ``width``.

    ``weight``: "feather" ((1 - |u|)(1 - |v|): zero at each view's border, so seams fade), "uniform", or "nearest"
    (each canvas pixel from the one view whose axis is closest: exact for cube faces)."""

    def __init__(
        self,
        cameras: list[View],
        height: int,
        width: int,
        weight: str = "feather",
        device: torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        if weight not in WEIGHTS:
            raise ValueError(f"weight {weight!r}: choose one of {', '.join(WEIGHTS)}")
        if width % 2:
            raise ValueError(f"equirect width {width} must be even")
        self.cameras, self.height, self.width = list(cameras), height, width
        directions = equirect_directions(height, width, device=device)
        self.to_canvas, weights = [], []
        self.to_view = []
        for camera in self.cameras:
            pixels, inside = view_pixel(directions, camera)
            weights.append(view_weight(pixels, inside, camera, "axis" if weight == "nearest" else weight))
            self.to_canvas.append(_grid(pixels, *camera.size).to(dtype))
            into_canvas = equirect_pixel(view_directions(camera, device=device), height, width) + 1
            self.to_view.append(_grid(into_canvas, height + 2, width + 2).to(dtype))
        stacked = torch.stack(weights)
        if weight == "nearest":
            best = stacked.argmax(dim=0)
            stacked = (torch.arange(len(weights), device=device)[:, None, None] == best) & (stacked > 0)
        self.weights = stacked.to(dtype)  # [V, H, W]
        self.total = self.weights.sum(dim=0)  # [H, W]; 0 where no view sees the pixel

    def overlapping(self) -> torch.Tensor:
        """[V] bool: the views that share canvas pixels with another view (the others have nothing to agree with)."""
        others = self.total - self.weights
        return ((self.weights > 0) & (others > 0)).flatten(1).any(dim=1)

    def fuse(self, views: torch.Tensor, previous: torch.Tensor | None = None, mode: str = "bilinear") -> torch.Tensor:
        """Views [V, B, C, h, w] -> canvas [B, C, H, W]: the weighted mean of the views that see each pixel;
        ``previous`` (or 0) where none does."""
        if views.shape[0] != len(self.cameras):
            raise ValueError(f"{views.shape[0]} views for a canvas of {len(self.cameras)} cameras")
        batch, channels = views.shape[1:3]
        canvas = views.new_zeros(batch, channels, self.height, self.width)
        for view, grid, weight in zip(views, self.to_canvas, self.weights):
            grid = grid.to(views.device, views.dtype).expand(batch, -1, -1, -1)
            sampled = F.grid_sample(view, grid, mode=mode, padding_mode="border", align_corners=False)
            canvas += sampled * weight.to(views)
        total = self.total.to(views)
        canvas = canvas / total.clamp_min(1e-12)
        seen = total > 0
        return torch.where(seen, canvas, previous if previous is not None else torch.zeros_like(canvas))

    def render(self, canvas: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
        """Canvas [B, C, H, W] -> views [V, B, C, h, w] (each view samples the canvas at its pixels' directions)."""
        padded = _pad_sphere(canvas)
        batch = canvas.shape[0]
        return torch.stack(
            [
                F.grid_sample(
                    padded,
                    grid.to(canvas.device, canvas.dtype).expand(batch, -1, -1, -1),
                    mode=mode,
                    padding_mode="border",
                    align_corners=False,
                )
                for grid in self.to_view
            ]
        )

    def synchronise(
        self, views: torch.Tensor, previous: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One fusion step: (canvas, every view rendered from it): the views made consistent on the sphere."""
        canvas = self.fuse(views, previous)
        return canvas, self.render(canvas)


def perspective_to_equirect(
    views: torch.Tensor, cameras: list[View], height: int, width: int, weight: str = "feather", mode: str = "bilinear"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fuse views [V, B, C, h, w] onto an equirect canvas once: (canvas [B, C, H, W], weight sum [H, W])."""
    canvas = SphereCanvas(cameras, height, width, weight, views.device, views.dtype)
    return canvas.fuse(views, mode=mode), canvas.total


def equirect_to_cubemap(image: torch.Tensor, face_size: int, mode: str = "bilinear") -> torch.Tensor:
    """The six faces [6, B, C, s, s] in ``projection.CUBE_FACES`` order."""
    return torch.stack(
        [sample_equirect(image, view_directions(v, device=image.device), mode) for v in cube_face_views(face_size)]
    )


def cubemap_to_equirect(faces: torch.Tensor, height: int, width: int, mode: str = "bilinear") -> torch.Tensor:
    """An equirect [B, C, H, W] from six faces [6, B, C, s, s]; every pixel comes from the face it lies on."""
    if faces.shape[0] != 6 or faces.shape[-1] != faces.shape[-2]:
        raise ValueError(f"cubemap faces {tuple(faces.shape)}: expected [6, B, C, s, s]")
    return perspective_to_equirect(faces, cube_face_views(faces.shape[-1]), height, width, "nearest", mode)[0]


def align_depth(depth: torch.Tensor, reference: torch.Tensor, valid: torch.Tensor) -> tuple[float, float]:
    """Least-squares (scale, shift) with scale * depth + shift ~ reference on the ``valid`` pixels: brings one
    view's relative depth to the running canvas' before fusion. Identity when fewer than 2 distinct values."""
    x, y = depth[valid].double(), reference[valid].double()
    if x.numel() < 2 or float(x.var(unbiased=False)) < 1e-12:
        return 1.0, 0.0
    scale = float(((x - x.mean()) * (y - y.mean())).mean() / x.var(unbiased=False))
    return scale, float(y.mean() - scale * x.mean())
