"""Pictures from the engine's maps: overlay sheets and step grids (PIL, no host)."""
