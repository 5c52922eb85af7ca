"""minianimate: a compact reference implementation of AnimateDiff."""
