"""The Kazi shared ground floor: models, settings, schemas, and the S3 / Label Studio adapters."""
