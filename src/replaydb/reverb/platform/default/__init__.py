"""``reverb.platform.default``."""
