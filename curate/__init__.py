"""curate: lint, review and train chat fine-tuning data."""
__version__ = "0.1.0"
