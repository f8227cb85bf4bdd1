"""nlcg-bench's worked plug-in: ``optim.SignMomentum`` (an optimizer written by hand), ``model.build`` (a small
CNN) and ``data.load`` (Fashion-MNIST's ten classes folded into four), registered in pyproject.toml's entry
points. Nothing here imports nlcg-bench: a plug-in needs only the contracts (docs/architecture.md)."""
