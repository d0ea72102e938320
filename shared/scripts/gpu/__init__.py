"""Per-app GPU checks driven by ``shared/scripts/gpu_check.py`` (one module per app, one ``CHECK`` each)."""
