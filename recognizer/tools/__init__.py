"""Offline tools: facemon-replay, facemon-calibrate, model training, and the anti-spoof model only bench and tests use."""
