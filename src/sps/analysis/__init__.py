"""Learning-dynamics analysis: squeezing metrics, probes, the empirical Pass@k upper bound, reports."""
