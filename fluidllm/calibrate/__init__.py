"""Batch-time calibration: read GPU profile tables, fit the batch-time families to them, carry the fit's
uncertainty into capacities, and time a transformer decoder to write a profile of one's own GPU."""
from .fit import FAMILIES, CalibrationResult, FamilyFit, fit_family, fit_profile
from .profile import Profile, read_profile
from .profiler import ProfileRun, Shape, profile_model
from .uncertainty import (BootstrapFits, CapacityInterval, Sensitivity, bootstrap_fits, capacity_interval,
                          capacity_sensitivity, scaled_batch_time)

__all__ = ["fit_profile", "fit_family", "FamilyFit", "CalibrationResult", "read_profile", "Profile", "FAMILIES",
           "profile_model", "ProfileRun", "Shape", "bootstrap_fits", "BootstrapFits", "capacity_interval",
           "CapacityInterval", "capacity_sensitivity", "Sensitivity", "scaled_batch_time"]
