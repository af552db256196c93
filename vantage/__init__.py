# Load the Celery app with Django, so jobs enqueued from web processes use its settings.
from vantage.celery import app as celery_app

__all__ = ["celery_app"]
