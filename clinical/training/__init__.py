"""Fine-tuning engine: freezing schedule, parameter groups, mixing, checkpoints, AMP, DDP."""
