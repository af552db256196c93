"""Object ids as the API accepts them: in paths, bodies and query strings.

Every primary key is a 64-bit integer column, and a larger number reaches neither SQLite
(OverflowError while binding) nor PostgreSQL (an out-of-range error) gracefully. So an
id is parsed with this one bound wherever it enters: a path converter for the routers
(a larger number matches no URL: 404), `core.serializers.IdField` for bodies and
`core.filters.IdFilter` for query strings (400, naming the field).
"""

MAX_ID = 2**63 - 1


class IdConverter:
    """`<id:pk>`: a positive 64-bit integer; anything else matches no URL (404)."""

    regex = "[0-9]{1,19}"

    def to_python(self, value: str) -> int:
        number = int(value)
        if not 0 < number <= MAX_ID:
            raise ValueError(value)  # Django reads this as "no match"
        return number

    def to_url(self, value) -> str:
        return str(value)
