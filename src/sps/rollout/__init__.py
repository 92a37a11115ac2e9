"""Rollout engines: sample completions with the log-probability of every sampled token."""
