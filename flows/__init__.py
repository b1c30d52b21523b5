"""Kazi: an impact-sourcing annotation pipeline on Prefect, S3 and Label Studio."""
