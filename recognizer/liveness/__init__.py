"""Is the face alive: blinks per tracked face (eye aspect ratio and the eye-state CNN), long closures."""
