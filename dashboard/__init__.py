"""The alert dashboard: Flask + SQLAlchemy app that stores alerts with their evidence and shows them live.

Import `dashboard.app.create_app` to build the app; `python -m dashboard --help` for the command line.
Nothing heavy happens at import.
"""
