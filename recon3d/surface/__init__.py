"""Surfaces: depth maps fused into meshes (Open3D TSDF, screened Poisson), cleaned, measured and pictured."""
