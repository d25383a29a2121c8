"""Diagnostics that explain why gradients vanish or explode: signals measured at diagnostic
steps (signals.py, through_time.py), histograms (histograms.py), the mean-field prediction
beside the measurement (theory.py) and the figures drawn at the end (figures.py)."""
