"""Reading and writing the ecosystem's formats: COLMAP, nerfstudio transforms.json, images, recon3d scenes."""
