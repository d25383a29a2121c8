"""Sweeps: job naming, the table of all jobs, the comparison figures and `gradexp-report`."""
