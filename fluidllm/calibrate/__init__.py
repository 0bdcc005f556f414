"""Batch-time calibration: read GPU profile tables and fit the batch-time families to them."""
from .fit import FAMILIES, CalibrationResult, FamilyFit, fit_family, fit_profile
from .profile import Profile, read_profile

__all__ = ["fit_profile", "fit_family", "FamilyFit", "CalibrationResult", "read_profile", "Profile", "FAMILIES"]
