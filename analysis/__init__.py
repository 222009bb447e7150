"""What we learned from a run: ranking and reports, read from the run directory's files alone."""
