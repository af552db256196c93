"""Query-string filters for the algorithm, task and run lists.

Related objects filter by id with core.filters.IdFilter: no lookup query, and an id outside the
caller's scope simply matches nothing. A task's `status` filters on the status the
database derives from its runs (tasks.selectors.with_status).
"""

import django_filters

from core.filters import IdFilter
from tasks.models import Algorithm, Run, Task


class AlgorithmFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=Algorithm.Status.choices)
    name = django_filters.CharFilter(lookup_expr="icontains")

    class Meta:
        model = Algorithm
        fields = ["status", "name"]


class TaskFilter(django_filters.FilterSet):
    collaboration = IdFilter(field_name="collaboration_id")
    status = django_filters.ChoiceFilter(choices=Task.Status.choices)
    init_organization = IdFilter(field_name="init_organization_id")
    parent = IdFilter(field_name="parent_id")
    job = IdFilter(field_name="job_id")

    class Meta:
        model = Task
        fields = ["collaboration", "status", "init_organization", "parent", "job"]


class RunFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=Run.Status.choices)
    task = IdFilter(field_name="task_id")
    organization = IdFilter(field_name="organization_id")
    node = IdFilter(field_name="node_id")

    class Meta:
        model = Run
        fields = ["status", "task", "organization", "node"]
