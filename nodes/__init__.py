"""Thin ComfyUI V3 adapters over sync_core and ldm3d_core (see nodes/extension.py for the node list)."""
