"""Pictures, one function per kind; each returns a matplotlib Figure and can save a PNG."""
