"""Benchmark harness: Horovod data-parallel ResNet training, logged to Parquet."""
