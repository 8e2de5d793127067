"""The segments lookup service (FastAPI + sse-starlette): `python -m service --profile dev` (see `service.app`)."""
