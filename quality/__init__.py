"""Quality benchmark: a procedural shapes dataset, a tiny text-to-image model trained on it, a detector and an
evaluation command that measures whether A-STAR rescues neglected objects."""
