"""ODS eye synthesis: z-buffered forward warp, wrap-aware hole filling, fast backward-warp preview.

Convention:
    image [H, W, C] float (any range, any device), r [H, W] metres (>= 0, inf allowed), same device.
    Outputs share the input device; ``hole`` is a bool [H, W] (True = the eye saw no source pixel there and
    the pixel was not a crack; see ``fill_holes``). All x arithmetic is modulo W: the 0/360 seam is interior.
    The geometry is ``ods.ODSGeometry`` / ``ods.ods_shift_px`` (left eye moves content right).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from .ods import ODSGeometry, eye_sign, ods_shift_px

FILL_MODES = ("background", "stretch", "none")
WARP_MODES = ("forward", "backward")
_EMPTY = torch.iinfo(torch.int64).max
_INVISIBLE = 0x7FFFFFFF  # float32 bit pattern above +inf: sorts after every visible point


@dataclass
class EyeResult:
    """One synthesized eye: ``image`` [H, W, C], ``r`` [H, W] metres (inf where unknown), ``hole`` [H, W] bool."""

    image: torch.Tensor
    r: torch.Tensor
    hole: torch.Tensor


def _check(image: torch.Tensor, r: torch.Tensor) -> None:
    if image.ndim != 3 or r.ndim != 2 or image.shape[:2] != r.shape:
        raise ValueError(
            f"expected image [H,W,C] and r [H,W] of the same size, got {tuple(image.shape)} and {tuple(r.shape)}"
        )
    if torch.isnan(r).any() or (r < 0).any():
        raise ValueError("r must be >= 0 and not NaN (inf is allowed)")


def forward_splat(
    image: torch.Tensor, r: torch.Tensor, eye: str | int, geom: ODSGeometry, dtype: torch.dtype = torch.float32
) -> EyeResult:
    """Forward-warp with a deterministic z-buffer; no filling (holes are zero, ``r`` = inf there).

    Each source pixel goes to ``(y + round(dy), (x + round(dx)) mod W)`` (rounding the shift, not the position,
    keeps the warp exactly equivariant to yaw and mirror). Per target the nearest ``r`` wins; exact ties are
    broken by source row, then by the displacement along the eye's direction, so the result is independent of
    where the seam lies. Uses one ``scatter_reduce(amin)`` on an int64 key: ``float32 bits of r << 32 | tie``.
    """
    _check(image, r)
    s = eye_sign(eye)
    height, width = r.shape
    n = height * width
    kbits = max(3, (width - 1).bit_length())  # bits of the in-row part of the tie-break
    if width < 8 or (height << kbits) > 2**32 or n >= 2**31:
        raise ValueError(f"image {width}x{height} is outside the z-buffer's range (8 <= W, H * 2W <= 2^32)")
    dx, dy, visible = ods_shift_px(r, s, geom, dtype)
    dev = r.device
    sx = torch.round(dx).to(torch.int32)  # |sx| <= W/4 + 1 since |delta| <= pi/2
    del dx  # here and below: per-pixel temporaries go as soon as they are used (the peak is ~45 B/px)
    ys = torch.arange(height, device=dev, dtype=torch.int32)[:, None]
    xs = torch.arange(width, device=dev, dtype=torch.int32)[None, :]
    xt = torch.remainder(xs + sx, width)
    if geom.horizontal_only:
        target = ys * width + xt
    else:
        target = (ys + torch.round(dy).to(torch.int32)).clamp_(0, height - 1) * width + xt
    del dy, xt
    # tie-break: source row, then the displacement along the eye's direction (roll- and mirror-invariant)
    tie = (ys.to(torch.int64) << kbits) + (width // 2 - s * sx).to(torch.int64)
    del sx
    bits = torch.where(visible, r.float().abs().contiguous().view(torch.int32), _INVISIBLE)
    del visible
    key = ((bits.to(torch.int64) << 32) | tie).reshape(-1)
    del bits, tie
    best = torch.full((n,), _EMPTY, dtype=torch.int64, device=dev)
    best.scatter_reduce_(0, target.reshape(-1).to(torch.int64), key, reduce="amin", include_self=True)
    del key, target
    hole = best >= (_INVISIBLE << 32)
    low = (best & 0xFFFFFFFF).masked_fill_(hole, width // 2)  # holes decode to "themselves"
    del best
    src_y = low >> kbits
    back = (s * ((low & ((1 << kbits) - 1)) - width // 2)).to(torch.int32)  # x_src - x_target
    del low
    tgt_x = torch.arange(width, device=dev, dtype=torch.int32).repeat(height)
    src = src_y * width + torch.remainder(tgt_x + back, width).to(torch.int64)
    del src_y, back, tgt_x
    out = image.reshape(n, -1)[src].masked_fill_(hole[:, None], 0)
    out_r = r.reshape(-1)[src].to(torch.float32).masked_fill_(hole, float("inf"))
    return EyeResult(out.reshape(image.shape), out_r.reshape(height, width), hole.reshape(height, width))


def _prefix_known(hole: torch.Tensor) -> torch.Tensor:
    """Per row, the last known (non-hole) column <= x, or -1: cummax over column indices."""
    width = hole.shape[1]
    idt = torch.int16 if width < 2**15 else torch.int32
    idx = torch.arange(width, device=hole.device, dtype=idt).expand_as(hole)
    return torch.cummax(torch.where(hole, -1, idx), dim=1).values


def _hole_neighbours(hole: torch.Tensor, hy: torch.Tensor, hx: torch.Tensor):
    """For the hole pixels (hy, hx): nearest known column to the left (<= x) and right (>= x), cyclically.

    Returns int64 (left, right), unwrapped: ``left`` in [x - W + 1, x), ``right`` in (x, x + W - 1]; in rows
    without any known pixel ``left < x - W``.
    """
    width = hole.shape[1]
    fwd = _prefix_known(hole)
    rev = _prefix_known(torch.flip(hole, [1]))  # the mirrored row: rev[m] is about column W - 1 - m
    left = fwd[hy, hx].to(torch.int64)
    left = torch.where(left >= 0, left, fwd[hy, width - 1].to(torch.int64) - width)
    q = rev[hy, width - 1 - hx].to(torch.int64)
    q = torch.where(q >= 0, q, rev[hy, width - 1].to(torch.int64) - width)
    return left, (width - 1) - q


def fill_holes(
    res: EyeResult, eye: str | int, fill: str = "background", crack_px: int = 2, tau: float = 0.05
) -> EyeResult:
    """Fill horizontal hole runs (wrap-aware) from their two neighbours in the same row.

    First (if ``crack_px >= 1``) one-row vertical gaps between similar depths above and below are averaged:
    the vertical ODS correction can round two adjacent source rows one row apart.
    A run is a **crack** if it is at most ``crack_px`` wide and ``|r_L - r_R| / min(r_L, r_R) < tau``: it is
    interpolated linearly (colour and r) and is not reported as a hole. Other runs are **disocclusions**:
    ``background`` copies colour and r from the neighbour with the larger r (exact ties: the left neighbour for
    the left eye, the right neighbour for the right eye), ``stretch`` interpolates linearly like a crack,
    ``none`` leaves every hole black (cracks included) and reports all of them. Rows with no pixel at all stay
    black and are reported as holes.
    """
    if fill not in FILL_MODES:
        raise ValueError(f"fill {fill!r} is not one of {FILL_MODES}")
    if fill == "none" or not bool(res.hole.any()):
        return res
    s = eye_sign(eye)
    out, out_r, out_hole = res.image.clone(), res.r.clone(), res.hole.clone()
    height, width = out_hole.shape
    hy, hx = torch.nonzero(out_hole, as_tuple=True)  # work only on hole pixels (usually a few %)
    if crack_px >= 1 and height >= 3:
        inner = (hy > 0) & (hy < height - 1)
        vy, vx = hy[inner], hx[inner]
        up, dn = vy - 1, vy + 1
        ra, rb = res.r[up, vx], res.r[dn, vx]
        rel = (ra - rb).abs() / torch.minimum(ra, rb).clamp_min(1e-12)
        vc = ~res.hole[up, vx] & ~res.hole[dn, vx] & ((ra == rb) | (rel < tau))
        if bool(vc.any()):
            vy, vx, up, dn, ra, rb = vy[vc], vx[vc], up[vc], dn[vc], ra[vc], rb[vc]
            out[vy, vx] = 0.5 * (res.image[up, vx] + res.image[dn, vx])
            out_r[vy, vx] = torch.where(ra == rb, ra, 0.5 * (ra + rb))
            out_hole[vy, vx] = False
            hy, hx = torch.nonzero(out_hole, as_tuple=True)
    if hy.numel() == 0:
        return EyeResult(out, out_r, out_hole)
    left, right = _hole_neighbours(out_hole, hy, hx)
    empty_row = left < hx - width
    li = torch.remainder(left, width).clamp_min(0)
    ri = torch.remainder(right, width).clamp_min(0)
    run = right - left - 1
    r_l, r_r = out_r[hy, li], out_r[hy, ri]
    c_l, c_r = out[hy, li], out[hy, ri]
    same = r_l == r_r  # also covers inf == inf
    rel = torch.where(same, torch.zeros_like(r_l), (r_l - r_r).abs() / torch.minimum(r_l, r_r).clamp_min(1e-12))
    crack = (run <= crack_px) & (rel < tau) & ~empty_row
    # weights from integers, summed in either order: bitwise mirror-symmetric interpolation
    span = (run + 1).clamp_min(1).to(out.dtype)
    w_r = (hx - left).to(out.dtype) / span
    w_l = (right - hx).to(out.dtype) / span
    c_lin = c_l * w_l[:, None] + c_r * w_r[:, None]
    r_lin = torch.where(same, r_l, r_l * w_l.to(out_r.dtype) + r_r * w_r.to(out_r.dtype))
    if fill == "stretch":
        c_dis, r_dis = c_lin, r_lin
    else:
        take_left = (r_l > r_r) | (same & (s < 0))
        c_dis = torch.where(take_left[:, None], c_l, c_r)
        r_dis = torch.where(take_left, r_l, r_r)
    keep = ~empty_row
    out[hy[keep], hx[keep]] = torch.where(crack[:, None], c_lin, c_dis)[keep]
    out_r[hy[keep], hx[keep]] = torch.where(crack, r_lin, r_dis)[keep]
    out_hole[hy[crack], hx[crack]] = False
    return EyeResult(out, out_r, out_hole)


def _area_down2(x: torch.Tensor) -> torch.Tensor:
    """[2H, 2W, C] -> [H, W, C] mean over 2x2 blocks."""
    h2, w2, c = x.shape
    return x.reshape(h2 // 2, 2, w2 // 2, 2, c).mean(dim=(1, 3))


def render_eye(
    image: torch.Tensor,
    r: torch.Tensor,
    eye: str | int,
    geom: ODSGeometry,
    *,
    warp: str = "forward",
    fill: str = "background",
    crack_px: int = 2,
    tau: float = 0.05,
    supersample: int = 1,
    iterations: int = 3,
    dtype: torch.dtype = torch.float32,
) -> EyeResult:
    """One ODS eye from an equirect image and its radial distance (see the module Convention).

    ``warp='forward'``: z-buffered splat + ``fill_holes`` (reference quality, hole mask).
    ``warp='backward'``: ``backward_warp`` (fast preview, no holes).
    ``supersample=2``: nearest-upsample the inputs, warp at 2W x 2H, then area-downsample the colour; a pixel is
    a hole if any of its four sub-pixels is (conservative mask for inpainting); ``r`` is the 2x2 minimum.
    """
    _check(image, r)
    if warp not in WARP_MODES:
        raise ValueError(f"warp {warp!r} is not one of {WARP_MODES}")
    if supersample not in (1, 2):
        raise ValueError(f"supersample = {supersample!r} must be 1 or 2")
    if crack_px < 0 or not tau >= 0:
        raise ValueError(f"crack_px = {crack_px!r} and tau = {tau!r} must be >= 0")
    if warp == "backward":
        return backward_warp(image, r, eye, geom, iterations=iterations, dtype=dtype)
    if supersample == 2:
        img2 = image.repeat_interleave(2, 0).repeat_interleave(2, 1)
        r2 = r.repeat_interleave(2, 0).repeat_interleave(2, 1)
        splat = forward_splat(img2, r2, eye, geom, dtype)
        del img2, r2  # 4x the input: not kept through the filling
        big = fill_holes(splat, eye, fill, 2 * crack_px, tau)
        del splat
        hole = _area_down2(big.hole[..., None].float())[..., 0] > 0
        rmin = -F.max_pool2d(-big.r[None, None], 2)[0, 0]
        return EyeResult(_area_down2(big.image), rmin, hole)
    return fill_holes(forward_splat(image, r, eye, geom, dtype), eye, fill, crack_px, tau)


class _RowSampler:
    """Linear interpolation along x with wrap, by flat row-major indexing of a one-column-padded copy."""

    def __init__(self, height: int, width: int, device: torch.device | str):
        self.width = width
        self.rowbase = (torch.arange(height, device=device, dtype=torch.int64) * (width + 1))[:, None]

    def locate(self, xf: torch.Tensor):
        x0f = torch.floor(xf)
        x0 = torch.remainder(x0f.to(torch.int32), self.width).to(torch.int64)
        return self.rowbase + x0, xf - x0f

    def sample(self, values: torch.Tensor, where: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """values [H, W, C] -> [H, W, C] at the located positions."""
        idx, frac = where
        padded = torch.cat([values, values[:, :1]], dim=1).reshape(-1, values.shape[-1])
        v0, v1 = padded[idx], padded[idx + 1]
        del padded
        return v1.sub_(v0).mul_(frac.to(values.dtype)[..., None]).add_(v0)  # v0 + (v1 - v0) * frac, in place


def backward_warp(
    image: torch.Tensor,
    r: torch.Tensor,
    eye: str | int,
    geom: ODSGeometry,
    *,
    iterations: int = 3,
    dtype: torch.dtype = torch.float32,
) -> EyeResult:
    """Fast preview: for every output pixel solve ``x_src + dx(x_src) = x_out`` by fixed-point iteration.

    ``x_{k+1} = x_out - dx(round(x_k))``, ``x_0 = x_out``, with ``dx`` from ``ods_shift_px`` (wrapping);
    colour is sampled linearly with wrap at the final ``x``, ``r`` at the nearest column. Rows are kept
    (``phi = beta``), there are no holes (backgrounds stretch) and occlusion near edges is approximate. Points
    inside the viewing circle are clamped to a quarter-turn shift.
    """
    _check(image, r)
    s = eye_sign(eye)
    height, width = r.shape
    dx, _, _ = ods_shift_px(r, s, replace(geom, horizontal_only=True), dtype)
    rows = _RowSampler(height, width, r.device)
    flat = dx.reshape(-1)
    base = (torch.arange(height, device=r.device, dtype=torch.int64) * width)[:, None]
    xs = torch.arange(width, device=r.device, dtype=dtype).expand(height, width)
    xk = xs
    for _ in range(max(1, int(iterations))):  # dx at the nearest column: one gather per iteration
        near = torch.remainder(torch.round(xk).to(torch.int32), width).to(torch.int64)
        xk = xs - flat[base + near]
    del near, flat, dx
    where = rows.locate(xk)
    out = rows.sample(image, where)
    nearest = torch.remainder(torch.round(xk).to(torch.int32), width).to(torch.int64)
    r_out = torch.gather(r, 1, nearest).to(torch.float32)
    return EyeResult(out, r_out, torch.zeros_like(r, dtype=torch.bool))


def render_pair(image: torch.Tensor, r: torch.Tensor, geom: ODSGeometry, **kwargs) -> tuple[EyeResult, EyeResult]:
    """Both eyes (left, right); keyword arguments as ``render_eye``."""
    return render_eye(image, r, "left", geom, **kwargs), render_eye(image, r, "right", geom, **kwargs)
