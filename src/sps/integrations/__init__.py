"""SPS inside other RL frameworks (each module imports its framework; install it first)."""
