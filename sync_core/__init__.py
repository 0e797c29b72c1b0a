"""SyncDiffusion / MultiDiffusion math in pure torch (no ComfyUI import).

Submodules: views (grids, crops, averaging), sync (the LPIPS-gradient synchronisation step),
perceptual (LPIPS construction and weight lookup), diffusers_adapter (run the core on diffusers parts).
"""
