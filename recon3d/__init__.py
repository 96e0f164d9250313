"""recon3d: photos in; calibrated cameras, a sparse model, a radiance field and labels out."""

__version__ = "0.1.0"
