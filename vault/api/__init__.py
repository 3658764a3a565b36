"""The web API (FastAPI): upload, download and administration routes."""
