"""The toy world where the paper's claims are measured: ShapeWorld, its models, stages and metrics."""
