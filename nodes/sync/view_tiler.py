"""Per-view denoising inside ComfyUI's sampling stack (MultiDiffusion tiler), used by the SyncDiffusion sampler.

`ViewTiler` is installed as `model_options["sampler_calc_cond_batch_function"]`: ComfyUI's `sampling_function`
calls it with the full panorama latent and the processed cond/uncond lists; it runs the model on every view with
conditioning cropped to that view and merges the per-view predictions by value/count. CFG (and any post-CFG
function) is then applied by ComfyUI on the merged canvas, which equals per-view CFG followed by averaging.

Per view, before calling ComfyUI's own `calc_cond_batch`:
- area conditioning is intersected with the view and shifted into view coordinates (dropped where it misses);
- conditioning masks and spatial model conds (`c_concat`: inpainting, depth/unCLIP concat) are cropped;
- ControlNet/T2I hints are resized to the canvas as stock ComfyUI would, then cropped per view (a whole hint is
  never squashed into a view); each view keeps its own control copy, so cached hints are reused across steps;
- SDXL size conditioning (`y`) is re-encoded with the view size unless the prompt set its own width/height.

Fusion (sync_core.fusion): `uniform` merges by value/count (MultiDiffusion); `gaussian` weights every view by the
Mixture-of-Diffusers Gaussian; `spot` swaps in the step's shifted grid and its per-view weights (`select_grid`, chosen
by the nearest scheduled sigma in transformer_options["sample_sigmas"]) before each evaluation.

Two scoped modes serve the sync step, each a context manager so no state outlives its block:
- `with tiler.views(ids):` the input is a stack of the given views (the gradient pass);
- `with tiler.start_from(deviations, sigma):` the first evaluation inside the block reads each view from its own
  synchronised latent (averaged latent + that view's deviation); leaving the block with them unused is an error,
  so synchronised latents are never dropped silently.
"""

from __future__ import annotations

import contextlib
import logging
import math

import comfy.conds
import comfy.model_base
import comfy.model_management
import comfy.utils
import torch

from ...sync_core import batching
from ...sync_core import fusion as core_fusion
from ...sync_core import views as core_views
from ..shared import comfy_compat

_VIEW_SPECIFIC_KEYS = ("area", "mask", "control", "gligen")


class ViewTiler:
    def __init__(
        self,
        model: comfy.model_base.BaseModel,
        views: list[core_views.View],
        latent_hw: tuple[int, int],
        view_batch_size: int = 1,
        previous_function=None,
        fusion: str = "uniform",
        grid_spec: tuple | None = None,
        seed: int | None = 0,
    ):
        self.model = model
        self.grid = views  # the view list (latent units); for fusion "spot", the current step's shifted grid
        self.fusion = core_fusion.check_fusion(fusion)
        self.grid_spec = grid_spec  # spot: (window, stride, circular), latent units (height, width)
        self.seed = 0 if seed is None else int(seed)
        self._shifts: list[tuple[int, int]] | None = None
        self._weights: torch.Tensor | None = None
        self._spot_weights: torch.Tensor | None = None  # spot: [V, h, w] for the current grid
        self.latent_h, self.latent_w = latent_hw
        self.view_batch_size = max(1, int(view_batch_size))
        self.previous_function = previous_function
        self._view_ids: list[int] | None = None
        self._deviations: list[torch.Tensor] | None = None
        self._deviation_sigma: float | None = None
        self._controls: dict[tuple[int, int], object] = {}
        self._count = None

    # ---- scoped modes for the sync step -------------------------------------------------------------------------
    @contextlib.contextmanager
    def views(self, view_ids):
        """Inside the block, the model input is a stack of these views (view-major, each the full batch)."""
        previous = self._view_ids
        self._view_ids = list(view_ids)
        try:
            yield self
        finally:
            self._view_ids = previous

    @contextlib.contextmanager
    def start_from(self, deviations: list[torch.Tensor] | None, sigma: float):
        """Inside the block, the first evaluation feeds view v with (its crop of the input + deviations[v])."""
        if deviations is None:
            yield self
            return
        self._deviations, self._deviation_sigma = deviations, sigma
        try:
            yield self
            if self._deviations is not None:
                raise RuntimeError(
                    "SyncDiffusion: the base sampler made no model call after a sync step, so the "
                    "synchronised view latents would be lost; use another sampler"
                )
        finally:
            self._deviations = self._deviation_sigma = None

    # ---- ComfyUI hook -------------------------------------------------------------------------------------------
    def __call__(self, args: dict) -> list[torch.Tensor]:
        conds, x, sigma = args["conds"], args["input"], args["sigma"]
        model, model_options = args["model"], args["model_options"]
        if self._view_ids is not None:
            return self._evaluate(conds, x, sigma, self._view_ids, model, model_options)
        if self._deviations is None:  # synchronised views pending: keep the grid the sync step used
            self.select_grid(sigma.flatten()[0], model_options.get("transformer_options", {}).get("sample_sigmas"))
        deviations = self._take_deviations(sigma)
        batch = x.shape[0]
        outputs = [torch.zeros_like(x) for _ in conds]
        for group in self._groups(conds):
            comfy.model_management.throw_exception_if_processing_interrupted()
            tiles = []
            for v in group:
                tile = core_views.crop_view(x, self.grid[v])
                if deviations is not None:
                    tile = tile + deviations[v].to(tile)
                tiles.append(tile)
            results = self._evaluate(conds, torch.cat(tiles), sigma, group, model, model_options)
            for k, result in enumerate(results):
                for j, v in enumerate(group):
                    core_views.add_view(
                        outputs[k], self._weighted(result[j * batch : (j + 1) * batch], v), self.grid[v]
                    )
        count = self._coverage(x)
        return [out / count for out in outputs]

    # ---- fusion -----------------------------------------------------------------------------------------------
    def select_grid(self, sigma, sample_sigmas=None) -> list[core_views.View]:
        """The grid used at `sigma` (it becomes `self.grid`): for fusion "spot" the shifted grid of the step whose
        scheduled sigma is nearest; otherwise the fixed grid."""
        if self.fusion != "spot" or self.grid_spec is None or sample_sigmas is None or len(sample_sigmas) < 2:
            return self.grid
        window, stride, circular = self.grid_spec
        steps = len(sample_sigmas) - 1
        if self._shifts is None or len(self._shifts) != steps:
            self._shifts = core_fusion.spot_shifts(self.seed, steps, stride)
        step = int((sample_sigmas[:-1].float().cpu() - float(sigma)).abs().argmin())
        shift = self._shifts[step]
        grid, weights = core_fusion.spot_grid(self.latent_h, self.latent_w, window, stride, shift, circular)
        if grid != self.grid or self._spot_weights is None or not torch.equal(weights, self._spot_weights):
            self.grid, self._spot_weights, self._count = grid, weights, None
        return self.grid

    def fuse(self, tiles, latent_h: int, latent_w: int) -> torch.Tensor:
        """Merge per-view tiles [V, ..., h, w] laid out on the current grid, with this tiler's fusion weights."""
        weights = self._view_weights(tiles[0])
        if weights is None:
            return core_views.average_views(tiles, self.grid, latent_h, latent_w)
        return core_fusion.weighted_average(tiles, self.grid, weights, latent_h, latent_w)

    def _view_weights(self, like: torch.Tensor) -> torch.Tensor | None:
        """[h, w] (gaussian), [V, h, w] (spot on a shifted grid) or None (plain mean)."""
        if self.fusion == "gaussian":
            return self._gaussian(like)
        if self.fusion == "spot" and self._spot_weights is not None:
            return self._spot_weights.to(device=like.device, dtype=like.dtype)
        return None

    def _gaussian(self, like: torch.Tensor) -> torch.Tensor:
        view = self.grid[0]
        w = self._weights
        if w is None or w.shape != (view.height, view.width) or w.device != like.device or w.dtype != like.dtype:
            w = self._weights = core_fusion.gaussian_weights(
                view.height, view.width, device=like.device, dtype=like.dtype
            )
        return w

    def _weighted(self, tile: torch.Tensor, view_index: int) -> torch.Tensor:
        weights = self._view_weights(tile)
        if weights is None:
            return tile
        return tile * (weights[view_index] if weights.dim() == 3 else weights)

    # ---- helpers ----------------------------------------------------------------------------------------------
    def _coverage(self, x: torch.Tensor) -> torch.Tensor:
        if self._count is None or self._count.device != x.device or self._count.dtype != x.dtype:
            weights = self._view_weights(x)
            if weights is not None:
                self._count = core_fusion.weight_sum(self.grid, weights, self.latent_h, self.latent_w)
            else:
                self._count = core_views.coverage_count(self.grid, self.latent_h, self.latent_w, x.device, x.dtype)
        return self._count

    def _take_deviations(self, sigma: torch.Tensor):
        deviations = self._deviations
        if deviations is None:
            return None
        self._deviations = None
        current = float(sigma.flatten()[0])
        if not math.isclose(current, self._deviation_sigma, rel_tol=1e-5, abs_tol=1e-8):
            # churn / restart samplers first evaluate at a raised sigma: x_hat = x + noise, so view v's own latent
            # is still (its crop + its deviation) + the same noise.
            logging.debug(
                "SyncDiffusion: first evaluation after sync at sigma %.5g (sync at %.5g)",
                current,
                self._deviation_sigma,
            )
        return deviations

    def _groups(self, conds) -> list[list[int]]:
        """Views evaluated together (balanced batches); view-specific conditioning (areas, masks, hints) forces one
        view per call."""
        size = 1 if _has_view_specific(conds) else self.view_batch_size
        ids = list(range(len(self.grid)))
        sizes = batching.batch_sizes(len(ids), size)
        groups, start = [], 0
        for n in sizes:
            groups.append(ids[start : start + n])
            start += n
        return groups

    def _evaluate(self, conds, x_stack, sigma, view_ids, model, model_options) -> list[torch.Tensor]:
        """Run ComfyUI's calc_cond_batch on a stack of views (view-major, each the full batch). View-specific
        conditioning differs per view, so such stacks are evaluated one view at a time and concatenated."""
        n = len(view_ids)
        if n > 1 and _has_view_specific(conds):
            per_view = x_stack.shape[0] // n
            sigmas = sigma.chunk(n) if sigma.shape[0] == x_stack.shape[0] else [sigma] * n
            parts = [
                self._evaluate(conds, x_stack[j * per_view : (j + 1) * per_view], sigmas[j], [v], model, model_options)
                for j, v in enumerate(view_ids)
            ]
            return [None if parts[0][k] is None else torch.cat([p[k] for p in parts]) for k in range(len(parts[0]))]
        per_view = x_stack.shape[0] // n
        view_conds = [
            None if cond_list is None else self._conds_for_views(cond_list, view_ids, per_view) for cond_list in conds
        ]
        timestep = sigma.repeat(n) if sigma.shape[0] * n == x_stack.shape[0] else sigma
        return comfy_compat.calc_cond_batch(
            model, view_conds, x_stack, timestep, model_options, previous=self.previous_function
        )

    def _conds_for_views(self, cond_list: list[dict], view_ids: list[int], batch: int) -> list[dict]:
        out = []
        for c in cond_list:
            new = dict(c)
            if "area" in c:
                area = self._area_in_view(c["area"], self.grid[view_ids[0]])
                if area is None:
                    continue
                new["area"] = area
            if "mask" in c:
                new["mask"] = core_views.crop_view(c["mask"], self.grid[view_ids[0]])
            if "control" in c and c["control"] is not None:
                new["control"] = self._control_for_view(c["control"], view_ids[0])
            new["model_conds"] = self._model_conds_for_views(c, view_ids, batch)
            out.append(new)
        return out

    def _area_in_view(self, area, view: core_views.View):
        """Area (h, w, y, x) in latent units -> the part inside `view`, in view coordinates; None if it misses.

        A wrapping (circular) view is tested against the area and its copy shifted by the panorama width.
        """
        area = list(area)
        if len(area) != 4:
            return tuple(area)  # other dimensionalities are left to ComfyUI
        h, w, y, x = (int(a) for a in area)
        top = max(y, view.top)
        bottom = min(y + h, view.top + view.height)
        best = None
        for shift in (0, self.latent_w):
            left = max(x + shift, view.left)
            right = min(x + w + shift, view.left + view.width)
            if right > left and bottom > top and (best is None or right - left > best[1]):
                best = (bottom - top, right - left, top - view.top, left - view.left)
        return best

    def _model_conds_for_views(self, c: dict, view_ids: list[int], batch: int) -> dict:
        model_conds = dict(c["model_conds"])
        for key, value in model_conds.items():
            if isinstance(value, comfy.conds.CONDNoiseShape):
                tensor = value.cond
                scale_h = tensor.shape[-2] / self.latent_h
                scale_w = tensor.shape[-1] / self.latent_w
                crops = []
                for v in view_ids:
                    view = _scaled_view(self.grid[v], scale_h, scale_w)
                    crops.append(comfy.utils.repeat_to_batch_size(core_views.crop_view(tensor, view), batch))
                model_conds[key] = comfy.conds.CONDNoiseShape(torch.cat(crops))
        if "y" in model_conds and isinstance(self.model, comfy.model_base.SDXL):
            model_conds["y"] = self._sdxl_size_cond(c, self.grid[view_ids[0]])
        return model_conds

    def _sdxl_size_cond(self, c: dict, view: core_views.View):
        canvas = (self.latent_h * 8, self.latent_w * 8)
        if (c.get("height"), c.get("width")) not in ((None, None), canvas):
            return c["model_conds"]["y"]  # the prompt set its own size conditioning: keep it
        px_h, px_w = view.height * 8, view.width * 8
        params = {k: v for k, v in c.items() if k not in ("model_conds", "control", "area", "mask", "uuid", "hooks")}
        params.update(width=px_w, height=px_h, target_width=px_w, target_height=px_h)
        return comfy.conds.CONDRegular(self.model.encode_adm(**params))

    def _control_for_view(self, control, view_index: int):
        """A copy of the control chain whose hints are this view's crop of the canvas-sized hints (cached)."""
        key = (id(control), self.grid[view_index])  # by geometry: spot grids change between steps
        if key in self._controls:
            return self._controls[key]
        previous = comfy_compat.control_previous(control)
        hint, scale, upscale = comfy_compat.control_hint(control)
        if hint is not None:
            width, height = self.latent_w * scale, self.latent_h * scale
            canvas_hint = comfy.utils.common_upscale(hint, width, height, upscale, "center")
            hint = core_views.crop_view(canvas_hint, _scaled_view(self.grid[view_index], scale, scale))
        previous_copy = None if previous is None else self._control_for_view(previous, view_index)
        copy = comfy_compat.control_copy_with_hint(control, hint, previous_copy, self.model)
        self._controls[key] = copy
        return copy

    def cleanup(self) -> None:
        """Free the per-view control copies (their cached hints) and any pending state."""
        for control in self._controls.values():
            comfy_compat.control_release(control)
        self._controls.clear()
        self._deviations = self._deviation_sigma = None
        self._view_ids = None


def _has_view_specific(conds) -> bool:
    return any(key in c for cond_list in conds for c in (cond_list or []) for key in _VIEW_SPECIFIC_KEYS)


def _scaled_view(view: core_views.View, scale_h: float, scale_w: float) -> core_views.View:
    if scale_h == 1 and scale_w == 1:
        return view
    return core_views.View(
        int(round(view.top * scale_h)),
        int(round(view.left * scale_w)),
        int(round(view.height * scale_h)),
        int(round(view.width * scale_w)),
    )


def install_view_tiler(
    extra_args: dict,
    model: comfy.model_base.BaseModel,
    views: list[core_views.View],
    latent_hw: tuple[int, int],
    view_batch_size: int,
    fusion: str,
    grid_spec: tuple,
) -> tuple[ViewTiler, dict]:
    """A ViewTiler for one sampling run, chained after the calc_cond_batch function already in the run's model
    options, and the run's extra_args with it installed (copies: the caller's dicts are not changed)."""
    model_options = dict(extra_args["model_options"])
    tiler = ViewTiler(
        model,
        views,
        latent_hw,
        view_batch_size,
        previous_function=model_options.get(comfy_compat.CALC_COND_BATCH_HOOK),
        fusion=fusion,
        grid_spec=grid_spec,
        seed=extra_args.get("seed"),
    )
    model_options[comfy_compat.CALC_COND_BATCH_HOOK] = tiler
    return tiler, {**extra_args, "model_options": model_options}
