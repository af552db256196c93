"""The Celery app: `celery -A vantage worker` and `celery -A vantage beat`.

Jobs live in each app's `jobs.py` (not `tasks.py`: `tasks` is our app of analysis tasks).
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vantage.settings")

app = Celery("vantage")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(related_name="jobs")
