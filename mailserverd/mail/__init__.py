"""mail package."""
