"""2D labels of a scene's images: detection and segmentation backends, their metrics and helpers."""
