"""Thin ComfyUI V3 adapters over sync_core and ldm3d_core, one package per feature.

sync/ (SyncDiffusion nodes and their sampler glue), sphere/ (full-sphere 360), vae/ (tiled VAE), ldm3d/ (LDM3D
loading, RGBD codec, depth files), stereo/ (ODS stereo, hole filling, layouts, meshes), shared/ (errors, checks,
guards, model folders). nodes/extension.py collects each package's node_classes().
"""
