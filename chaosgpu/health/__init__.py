"""What the gpu_health agent did on the GPU nodes (drained, marked for RMA, its phase, the XIDs it saw) and what Slurm
says about a node: probes, and the maintenance action the RMA rollback needs."""
