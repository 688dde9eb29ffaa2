"""Rendering: one Jinja2 environment, the disk layouts as data, kickstarts checked, cached and regenerated."""
