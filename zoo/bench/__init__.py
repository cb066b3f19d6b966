"""Figures one can check against the published ones: parameter counts and multiply-adds."""
