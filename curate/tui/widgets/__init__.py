"""Widgets of the review app; each posts its own messages and takes data from its parent."""
