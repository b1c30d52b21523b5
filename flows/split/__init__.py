"""split stage."""
