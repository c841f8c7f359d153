"""The per-frame vision path: decode, detect (HOG every frame, CNN sweeps), track, encode (worker processes), annotate."""
