"""clsrl-exp: CLS-RL / No-Thinking rule-based RL for VLM image classification (TRL GRPO + Hydra)."""
