"""Where a run's records go. A sink writes what it is given; it never decides what is measured."""
