"""Data: the one sample schema, synthetic generators and one adapter per dataset format."""

from kp3d.data.schema import Sample, collate

__all__ = ["Sample", "collate"]
