"""Training: one network (loop), K networks in one step (stacked, stacked_loop), and the
linear-interpolation paths between trained networks (interpolation)."""
