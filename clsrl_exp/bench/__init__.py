"""Benchmarks (scripts, not tests): GRPO step and evaluation throughput vs the hardware floor, and the learning check.

    python -m clsrl_exp.bench            # one GPU: Qwen2-VL-2B shapes with random weights (make bench-gpu)
    python -m clsrl_exp.bench --tiny     # CPU: the same code on the tiny model in under a minute (make bench)
    python -m clsrl_exp.bench.learning   # 3 seeds x {No-Thinking, CLS-RL} + a shuffled-label control per arm
    python -m clsrl_exp.bench.ranks      # CPU: one eval set with 1 vs 2 ranks (sharded evaluation)
"""
