"""SyncDiffusion / MultiDiffusion math in pure torch (no ComfyUI import).

Submodules:
- ``views``: ``View``, ``build_view_grid`` (official row-major grid + flush border view, optional horizontal wrap),
  ``anchor_index``, ``crop_view``/``crop_views``, ``add_view``/``add_views``, ``coverage_count``, ``average_views``.
- ``sync``: ``SyncSchedule`` (official ``(i+1) % freq == 0 and i < steps``, ``w * decay**k``) and ``sync_views``
  (one LPIPS gradient step of every non-anchor view towards the anchor's x0 image).
- ``coordinates``: ``vp_scale(kind, sigma)`` / ``vp_sigma`` (the VP latent ``z = s * x`` of ComfyUI's eps/v models and
  of flow-matching models, ``x = (1-t) x0 + t e``) and ``sampler_step_from_vp_gradient``.
- ``perceptual``: offline ``lpips.LPIPS`` built from torchvision backbone files (``build_lpips``,
  ``find_backbone_weights``, ``LPIPSWeightsMissing``, ``make_perceptual``).
- ``coherence``: the paper's panorama metrics Intra-LPIPS and Intra-Style-L over non-overlapping crops
  (``crop_boxes``, ``intra_lpips``, ``intra_style_loss``, ``build_style_vgg`` from ``vgg19-dcbb9e9d.pth``).
- ``diffusers_adapter``: ``sample_panorama`` = the official loop with diffusers UNet/VAE/DDIMScheduler on this core
  (imports diffusers lazily through its own module; the other submodules need only torch and lpips).
"""
