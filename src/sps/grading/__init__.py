"""Grading: turn a completion and a gold answer into a `Grade`."""
