"""A voxel-grid radiance field (NeRF) with an occupancy grid and a small colour head, trained on the CPU."""
