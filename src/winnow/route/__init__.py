"""route: batch-level routing of LLM queries under cost, GPU-capacity and concurrency limits.

A batch of queries is assigned to a pool of models at once, as an integer program that
maximises expected quality under a hard cost budget and per-model capacities, with robust
variants for uncertain quality estimates and an offline plan of GPU instances per model.
"""
