"""Structure from motion: tracks from pair matches and the incremental mapper (the triangulate stage)."""
