"""The node agent: runs a hospital's share of federated tasks next to its data.

It talks to the server only over the REST API and never touches the server's
database, so a site installs the repository and its requirements, writes a
`node.toml`, and runs `python manage.py run_node --config node.toml`.

Modules, from the outside in: `config` (node.toml → dataclasses), `client` (REST
calls), `policy` (what this site allows), `contract` (the vantage6 4.x container
environment), `workspace` (each run's folder and state file), `executor` (Docker,
isolation), `job` (one run's life), `agent` (the loop), `checks` (`--check`).
"""

VERSION = "0.1.0"
