"""Command line and process supervision: the composition root that wires settings to edges."""
