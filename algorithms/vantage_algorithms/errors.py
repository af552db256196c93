"""The errors an algorithm run can end with; each becomes one readable log line."""


class AlgorithmError(Exception):
    """The task cannot be done as asked (bad input, missing column, unknown method)."""


class DisclosureError(AlgorithmError):
    """This site's disclosure policy forbids the answer; nothing is released."""


class SubtaskFailed(AlgorithmError):
    """A site did not return a result for a subtask of a central method."""

    def __init__(self, organization: int, reason: str):
        self.organization, self.reason = organization, reason
        super().__init__(f"organisation {organization}: {reason}")
