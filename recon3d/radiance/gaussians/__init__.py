"""3D Gaussian splatting: the model, its rasterizer (PyTorch reference, C++ CPU kernel, gsplat on CUDA) and trainer."""
