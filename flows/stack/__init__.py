"""The embedded local stack: SeaweedFS S3, Label Studio instances and a Prefect server on 127.0.0.1."""
