"""A fake training job on Slurm and what its own records say about an interruption."""
