"""LPIPS for SyncDiffusion, built offline from a torchvision-format backbone file.

The official code uses ``lpips.LPIPS(net='vgg')`` (version 0.1, learned linear heads shipped inside the pip
package), whose VGG16 trunk is downloaded by torchvision on first use. Here the trunk is never downloaded: the
``lpips.LPIPS`` class is built with a random trunk (``pnet_rand=True``) and the trunk weights are loaded from the
torchvision checkpoint file (``vgg16-397923af.pth`` / ``alexnet-owt-7be5be79.pth``), mapping torchvision keys
``features.N.*`` onto lpips' ``net.sliceK.N.*``. The file may be the full torchvision checkpoint or its
``features.*`` subset.

Convention: ``LPIPS(a, b)`` takes images ``[N, 3, H, W]`` in [-1, 1] and returns ``[N, 1, 1, 1]``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager

import torch
from torch import Tensor

__all__ = [
    "BACKBONE_FILES",
    "LPIPSWeightsMissing",
    "find_backbone_weights",
    "build_lpips",
    "make_perceptual",
    "normalize_net_name",
    "PerceptualLoss",
]

BACKBONE_FILES = {"vgg": "vgg16-397923af.pth", "alex": "alexnet-owt-7be5be79.pth"}
_ALIASES = {"vgg": "vgg", "vgg16": "vgg", "alex": "alex", "alexnet": "alex"}


class LPIPSWeightsMissing(FileNotFoundError):
    """The torchvision backbone file for LPIPS was not found in any searched folder."""


def normalize_net_name(net: str) -> str:
    key = str(net).strip().lower()
    if key not in _ALIASES:
        raise ValueError(f"LPIPS net must be 'vgg' or 'alex', got {net!r}")
    return _ALIASES[key]


def _hub_checkpoint_dir() -> str:
    return os.path.join(torch.hub.get_dir(), "checkpoints")


def _search_order(search_dirs: Sequence[str]) -> list[str]:
    dirs = [os.fspath(d) for d in search_dirs if d]
    hub = _hub_checkpoint_dir()
    if hub not in dirs:
        dirs.append(hub)
    return dirs


def find_torchvision_file(name: str, search_dirs: Sequence[str]) -> str | None:
    """Path of torchvision's weights file ``name`` in ``search_dirs`` (in order), then in torch's hub cache
    (``torch.hub.get_dir()/checkpoints``, where torchvision would have downloaded it); None if absent."""
    for d in _search_order(search_dirs):
        path = os.path.join(d, name)
        if os.path.isfile(path):
            return path
    return None


def load_torchvision_file(
    name: str,
    path: str | None,
    search_dirs: Sequence[str],
    label: str,
    error: type[Exception],
    what: str = "the torchvision ImageNet backbone file",
) -> Mapping[str, Tensor]:
    """The state dict in torchvision's file ``name``: ``path`` (which must exist), else the file found by
    :func:`find_torchvision_file`. ``error`` (a ``FileNotFoundError``) when there is none, saying that ``label``
    needs ``what``; nothing is downloaded."""
    if path is not None and not os.path.isfile(path):
        raise error(f"{label} backbone file {path!r} does not exist; expected torchvision's '{name}'")
    if path is None:
        path = find_torchvision_file(name, search_dirs)
    if path is None:
        searched = _search_order(search_dirs)
        raise error(
            f"{label} needs {what} '{name}', which was not found. Searched: "
            + ", ".join(repr(d) for d in searched)
            + f". Put '{name}' (from torchvision, e.g. https://download.pytorch.org/models/{name}) into "
            f"{searched[0]!r}; no download is attempted."
        )
    return torch.load(path, map_location="cpu", weights_only=True)


def find_backbone_weights(net: str, search_dirs: Sequence[str]) -> str | None:
    """Path of the torchvision backbone file for ``net`` (:func:`find_torchvision_file`); None if absent."""
    return find_torchvision_file(BACKBONE_FILES[normalize_net_name(net)], search_dirs)


def _map_backbone_keys(model: torch.nn.Module, state_dict: Mapping[str, Tensor], net: str) -> dict[str, Tensor]:
    """torchvision ``features.N.{weight,bias}`` -> lpips ``net.sliceK.N.{weight,bias}``."""
    by_index: dict[str, str] = {}
    for key in model.state_dict():
        parts = key.split(".")
        if len(parts) == 4 and parts[0] == "net" and parts[1].startswith("slice"):
            by_index[f"features.{parts[2]}.{parts[3]}"] = key
    src = {}
    for key, value in state_dict.items():
        k = key[len("module.") :] if key.startswith("module.") else key
        if k.startswith("features."):
            src[k] = value
    missing = sorted(k for k in by_index if k not in src)
    if missing:
        raise ValueError(
            f"the LPIPS-{net} backbone state dict is not a torchvision {'VGG16' if net == 'vgg' else 'AlexNet'} "
            f"checkpoint: missing {missing[:4]}{' ...' if len(missing) > 4 else ''} (found {len(src)} features.* "
            f"keys)"
        )
    target_shapes = model.state_dict()
    mapped = {}
    for k, dst in by_index.items():
        if tuple(src[k].shape) != tuple(target_shapes[dst].shape):
            raise ValueError(
                f"the LPIPS-{net} backbone tensor {k} has shape {tuple(src[k].shape)}, expected "
                f"{tuple(target_shapes[dst].shape)}: wrong network file?"
            )
        mapped[dst] = src[k]
    return mapped


def build_lpips(
    net: str = "vgg",
    backbone_path: str | None = None,
    search_dirs: Sequence[str] = (),
    backbone_state_dict: Mapping[str, Tensor] | None = None,
) -> torch.nn.Module:
    """The real ``lpips.LPIPS`` (v0.1, learned heads from the pip package) with its trunk loaded from a
    torchvision-format file or state dict; eval mode, frozen, on CPU, fp32.

    Priority: ``backbone_state_dict``, then ``backbone_path``, then :func:`find_backbone_weights` over
    ``search_dirs`` + the torch hub cache. Raises :class:`LPIPSWeightsMissing` when nothing is found.
    """
    net = normalize_net_name(net)
    if backbone_state_dict is None:
        backbone_state_dict = load_torchvision_file(
            BACKBONE_FILES[net], backbone_path, search_dirs, f"LPIPS-{net}", LPIPSWeightsMissing
        )
    import lpips  # local import: heavy, and only needed here

    with warnings.catch_warnings():  # lpips passes torchvision's deprecated `pretrained=False`
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(
            pretrained=True,
            net=net,
            version="0.1",
            lpips=True,
            spatial=False,
            pnet_rand=True,
            pnet_tune=False,
            verbose=False,
        )
    mapped = _map_backbone_keys(model, backbone_state_dict, net)
    model.load_state_dict(mapped, strict=False)
    model.eval()
    model.requires_grad_(False)
    return model


class PerceptualLoss:
    """LPIPS as ``sync_views`` uses it: ``loss(a, b)`` like ``lpips.LPIPS(a, b)``, plus a split form that computes the
    reference image's features once (:meth:`prepare`) and compares many images to them (:meth:`compare`).

    Convention: images ``[N, 3, H, W]`` in [-1, 1]; results ``[N]`` float32. With ``resolution``, both images are
    resized (bilinear, antialiased) so that the shorter side is ``resolution`` first (cheaper; the official code uses
    full size). ``checkpoint=True`` runs each backbone slice under gradient checkpointing (same values and
    gradients, less memory). The math is ``lpips.LPIPS.forward`` (v0.1, linear heads, spatial average), split in two.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        resolution: int | None = None,
        checkpoint: bool = False,
        context: Callable[[], AbstractContextManager] | None = None,
    ):
        self.model = model
        self.resolution = resolution
        self.checkpoint = checkpoint
        self.context = context  # entered around each checkpointed slice (see sync_core.checkpointing)

    def _resize(self, image: Tensor) -> Tensor:
        if self.resolution is None or min(image.shape[-2:]) == self.resolution:
            return image
        scale = self.resolution / min(image.shape[-2:])
        size = (max(1, round(image.shape[-2] * scale)), max(1, round(image.shape[-1] * scale)))
        return torch.nn.functional.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=True)

    def features(self, image: Tensor) -> list[Tensor]:
        """The unit-normalised backbone features LPIPS compares (after the optional resize)."""
        import lpips  # local import: heavy, and only needed here

        param = next(self.model.parameters())
        h = self.model.scaling_layer(self._resize(image).to(device=param.device, dtype=param.dtype))
        net = self.model.net
        feats = []
        for k in range(1, net.N_slices + 1):
            block = getattr(net, f"slice{k}")
            if self.checkpoint and torch.is_grad_enabled() and h.requires_grad:
                h = torch.utils.checkpoint.checkpoint(
                    self._in_context(block), h, use_reentrant=False, preserve_rng_state=False
                )
            else:
                h = block(h)
            feats.append(lpips.normalize_tensor(h))
        return feats

    def _in_context(self, block: torch.nn.Module) -> torch.nn.Module:
        if self.context is None:
            return block

        def run(h: Tensor) -> Tensor:
            with self.context():
                return block(h)

        return run

    def prepare(self, reference: Tensor) -> list[Tensor]:
        """The reference images' normalised backbone features (no gradient): the ``target`` of :meth:`compare`."""
        with torch.no_grad():
            return [f.detach() for f in self.features(reference)]

    def distance(self, feats_a: Sequence[Tensor], feats_b: Sequence[Tensor]) -> Tensor:
        """LPIPS from two feature lists; ``feats_b`` may hold ``1/k`` of ``feats_a``'s batch (repeated k times, for
        view-major stacks of views against one reference batch). Returns ``[N]`` float32."""
        total = 0
        for k, (fa, fb) in enumerate(zip(feats_a, feats_b)):
            if fb.shape[0] != fa.shape[0]:
                fb = fb.repeat(fa.shape[0] // fb.shape[0], 1, 1, 1)
            total = total + self.model.lins[k]((fa - fb) ** 2).mean([2, 3], keepdim=True)
        return total.reshape(-1).float()

    def compare(self, image: Tensor, target: list[Tensor]) -> Tensor:
        """LPIPS between ``image [N,...]`` and prepared features of ``N`` or ``N/k`` reference images -> ``[N]``."""
        return self.distance(self.features(image), target)

    def __call__(self, a: Tensor, b: Tensor) -> Tensor:
        return self.distance(self.features(a), self.features(b))


def make_perceptual(
    model: torch.nn.Module,
    resolution: int | None = None,
    checkpoint: bool = False,
    context: Callable[[], AbstractContextManager] | None = None,
) -> PerceptualLoss:
    """:class:`PerceptualLoss` for :func:`sync_core.sync.sync_views` (LPIPS on [-1,1] images, optionally at a lower
    ``resolution``: the shorter side resized to it)."""
    return PerceptualLoss(model, resolution, checkpoint, context)
