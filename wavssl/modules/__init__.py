"""Small nn blocks, each testable alone."""
