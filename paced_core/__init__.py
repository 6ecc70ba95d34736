"""PACED's pure library: kernels, pass-rate estimates, weighted sampling, KL losses, tasks, verifiers.

Nothing here imports Ray, Redis or FastAPI; `services` composes these pieces into the pipeline.
"""

__version__ = "0.1.0"
