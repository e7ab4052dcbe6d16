# STAND-IN: gpuops.fleet GPU simulator (lab only). Not NVIDIA software.
"""Simulated NVIDIA GPUs for the gpuops.fleet lab: one shared state per node, read and written by the stand-ins
for nvidia-smi, dcgmi, nv-hostengine, dcgm-exporter and nvidia-persistenced. Standard library only (plus
python3-bcrypt for the exporter's basic auth)."""

__all__ = ["__version__"]

__version__ = "0.1.0"
