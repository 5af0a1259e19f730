"""Sub-commands of the ``kp3d`` CLI (see :mod:`kp3d.cli`)."""
