"""Figures and the claims report, from results/ Parquet files and experiments/paper_reference.csv."""
