"""The built-in roles. Used by a data migration and by tests that flush the database."""

from accounts.models import Action, Resource, Scope

R, A, S = Resource, Action, Scope
ALL_ACTIONS = list(A)

RESEARCHER_RULES = [
    (R.ORGANIZATION, A.VIEW, S.COLLABORATION),
    (R.COLLABORATION, A.VIEW, S.ORGANIZATION),
    (R.STUDY, A.VIEW, S.ORGANIZATION),
    (R.NODE, A.VIEW, S.COLLABORATION),
    (R.USER, A.VIEW, S.OWN),
    (R.ROLE, A.VIEW, S.GLOBAL),
    (R.ALGORITHM, A.VIEW, S.GLOBAL),
    (R.ALGORITHM, A.CREATE, S.GLOBAL),
    (R.TASK, A.VIEW, S.COLLABORATION),
    (R.TASK, A.CREATE, S.COLLABORATION),
    (R.TASK, A.EDIT, S.OWN),
    (R.TASK, A.DELETE, S.OWN),
    (R.RUN, A.VIEW, S.COLLABORATION),
]

DEFAULT_ROLES: dict[str, tuple[str, list[tuple[str, str, int]]]] = {
    "root": (
        "Everything, everywhere.",
        [(r, a, S.GLOBAL) for r in R for a in ALL_ACTIONS],
    ),
    "collaboration-admin": (
        "Manages the collaborations their organisation belongs to: studies, nodes, tasks.",
        [
            (R.ORGANIZATION, A.VIEW, S.COLLABORATION),
            (R.COLLABORATION, A.VIEW, S.COLLABORATION),
            (R.COLLABORATION, A.EDIT, S.COLLABORATION),
            (R.STUDY, A.VIEW, S.COLLABORATION),
            (R.STUDY, A.CREATE, S.COLLABORATION),
            (R.STUDY, A.EDIT, S.COLLABORATION),
            (R.STUDY, A.DELETE, S.COLLABORATION),
            (R.NODE, A.VIEW, S.COLLABORATION),
            (R.NODE, A.CREATE, S.COLLABORATION),
            (R.NODE, A.EDIT, S.COLLABORATION),
            (R.NODE, A.DELETE, S.COLLABORATION),
            (R.USER, A.VIEW, S.COLLABORATION),
            (R.ROLE, A.VIEW, S.GLOBAL),
            (R.ALGORITHM, A.VIEW, S.GLOBAL),
            (R.ALGORITHM, A.CREATE, S.GLOBAL),
            (R.TASK, A.VIEW, S.COLLABORATION),
            (R.TASK, A.CREATE, S.COLLABORATION),
            (R.TASK, A.EDIT, S.COLLABORATION),
            (R.TASK, A.DELETE, S.COLLABORATION),
            (R.RUN, A.VIEW, S.COLLABORATION),
        ],
    ),
    "organization-admin": (
        "Manages their own organisation: its users (up to researcher rights) and its nodes.",
        # A superset of the researcher's rules: nobody can grant rules they do not hold,
        # and an organisation admin must be able to create researchers.
        RESEARCHER_RULES + [
            (R.ORGANIZATION, A.EDIT, S.ORGANIZATION),
            (R.NODE, A.CREATE, S.ORGANIZATION),
            (R.NODE, A.EDIT, S.ORGANIZATION),
            (R.NODE, A.DELETE, S.ORGANIZATION),
            (R.USER, A.VIEW, S.ORGANIZATION),
            (R.USER, A.CREATE, S.ORGANIZATION),
            (R.USER, A.EDIT, S.ORGANIZATION),
            (R.USER, A.DELETE, S.ORGANIZATION),
        ],
    ),
    "researcher": (
        "Creates tasks in their collaborations and reads their results.",
        RESEARCHER_RULES,
    ),
    "viewer": (
        "Reads what happens in their collaborations; changes nothing.",
        # Exactly what a researcher may read.
        [rule for rule in RESEARCHER_RULES if rule[1] == A.VIEW],
    ),
}


def install_default_roles(role_model, rule_model) -> None:
    """Create the built-in roles or bring them to exactly these rules; idempotent.

    Takes the models as arguments so migrations can pass their historical ones.
    """
    for name, (description, rules) in DEFAULT_ROLES.items():
        role, _ = role_model.objects.update_or_create(
            name=name, defaults={"description": description, "is_builtin": True}
        )
        rule_ids = [
            rule_model.objects.get_or_create(resource=str(r), action=str(a), scope=int(s))[0].pk
            for r, a, s in rules
        ]
        role.rules.set(rule_ids)
