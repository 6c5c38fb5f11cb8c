"""Training: GRPO and SFT trainers, rows, rollout backends, callbacks, warm start."""
