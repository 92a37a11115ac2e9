"""Evaluation: Pass@k and friends from graded samples (`metrics`), and the report files of a
benchmark run (`report`)."""
