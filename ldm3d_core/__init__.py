"""LDM3D RGB-D and stereo-360 math in pure torch/numpy (no ComfyUI import).

Submodules: rgbd (RGBD split/merge, 16-bit depth packing), distance (depth to radial distance),
ods (omni-directional stereo geometry), ods_warp (z-buffered forward and backward warps), layouts (VR stereo
layouts), mesh (displaced sphere), depth_png (16-bit PNG files), tiling (tiled and 360-degree VAE passes).
"""
