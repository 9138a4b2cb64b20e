"""Real-time personalization service: events in, recommendations out.

``create_app(engine, storage, settings)`` builds the FastAPI app; nothing here runs at import.
"""
