"""Who a face is: the enrolled index, open-set matching with per-track votes, and enrolment."""
