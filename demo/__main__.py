"""`python -m demo up`: the demo network's nodes and its federated study.

Called by `./vantage.sh up` once the Docker engine, registry, database and server run:
builds the reference algorithm images, starts the three hospital nodes, runs the study
and prints its results next to the pooled reference, then the addresses and credentials.
Every failure ends with one line saying what to do (exit code 1).
"""

import argparse
import json
import sys
import time
from pathlib import Path

from demo import catalogue, network, signing, study
from demo.console import Progress, say


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="nodes, images and the study (called by ./vantage.sh up)")
    up.add_argument("--seed", type=Path, required=True, help="JSON written by manage.py demo_seed --json")
    up.add_argument("--server", required=True, help="the server's URL")
    up.add_argument("--state-dir", type=Path, required=True)
    up.add_argument("--registry-port", type=int, default=5000)
    up.add_argument("--registry-password-file", type=Path,
                    help="the registry password the nodes pull with (default: STATE_DIR/registry-password)")
    up.add_argument("--elapsed", type=int, default=0, help="seconds ./vantage.sh up took before this")
    up.add_argument("--no-study", action="store_true", help="start the network and its catalogue, skip the analyses")
    up.add_argument("--rerun", action="store_true",
                    help="run every analysis again, even where a completed task already answers it")
    return parser.parse_args(argv)


def read_seed(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise network.DemoError(f"cannot read the demo summary {path}: {exc}")


def user_entry(seed: dict, username: str) -> dict:
    for user in seed["users"]:
        if user["username"] == username:
            return user
    raise network.DemoError(f"the demo summary has no user {username}; run ./vantage.sh up again")


def up(args: argparse.Namespace) -> None:
    started = time.monotonic() - args.elapsed
    seed = read_seed(args.seed)
    for change in seed["changes"]:
        say(f"demo data: {change}")
    researcher = user_entry(seed, "researcher")
    if not researcher["password"]:
        raise network.DemoError("the researcher's password was changed since the demo was seeded; set "
                                "VANTAGE_DEMO_RESEARCHER_PASSWORD to it and run ./vantage.sh up again")

    author = user_entry(seed, "author")
    if not author["password"]:
        raise network.DemoError("the author's password was changed since the demo was seeded; set "
                                "VANTAGE_DEMO_AUTHOR_PASSWORD to it and run ./vantage.sh up again")
    reviewer = user_entry(seed, "reviewer")
    if not reviewer["password"]:
        raise network.DemoError("the reviewer's password was changed since the demo was seeded; set "
                                "VANTAGE_DEMO_REVIEWER_PASSWORD to it and run ./vantage.sh up again")
    api = study.connect(args.server, researcher["username"], researcher["password"])
    password_file = args.registry_password_file or args.state_dir / "registry-password"
    # Built before the nodes start, so the first study task does not wait for a build.
    images = study.build_images(args.registry_port)
    key, trusted_key = signing.ensure_key(args.state_dir)
    signed = signing.sign_images(images, key, registry_port=args.registry_port, password_file=password_file)
    say(f"signatures: {len(signed)} images signed with the demo reviewer's key "
        f"{next(iter(signed.values())).fingerprint[:16]}... ({trusted_key})")
    reviewer_client = study.connect(args.server, "reviewer", reviewer["password"]).client
    signing.register_key(reviewer_client, trusted_key)
    algorithms = catalogue.register(study.connect(args.server, "author", author["password"]).client,
                                    reviewer_client, images, signed)
    say("catalogue: " + ", ".join(f"{catalogue.TITLES.get(name, name)} (algorithm {pk})"
                                  for name, pk in algorithms.items()) + " approved by the reviewer")
    nodes_dir = args.state_dir / "demo-nodes"
    nodes = [
        network.DemoNode(name=n["name"], organization=n["organization"], key_file=Path(n["key_file"]),
                         folder=nodes_dir / n["name"])
        for n in seed["nodes"]
    ]
    for node in nodes:
        what = network.ensure_node(
            node, state_dir=args.state_dir, server_url=args.server, registry_port=args.registry_port,
            password_file=password_file, trusted_key=trusted_key, standby_images=tuple(images.values()),
        )
        say(f"node {node.name}: {what}")
    with Progress("nodes: waiting until all three are online"):
        network.wait_online(api, seed["collaboration"]["id"], nodes,
                            {n.name: args.state_dir / f"node-{n.name}.pid" for n in nodes})

    if not args.no_study:
        study.run(api, seed, algorithms, nodes, record_file=args.state_dir / "demo-study.json", rerun=args.rerun)

    print_addresses(args, seed, nodes, time.monotonic() - started)


def print_addresses(args: argparse.Namespace, seed: dict, nodes: list, took: float) -> None:
    base = args.server.rstrip("/")
    lines = [
        "",
        f"The demo network is running ({took:.0f} s).",
        f"  Portal:    {base}/portal/",
        f"  Admin:     {base}/admin/",
        f"  API docs:  {base}/api/docs/",
        f"  Registry:  127.0.0.1:{args.registry_port} (user vantage, password in "
        f"{args.state_dir / 'registry-password'})",
        "",
        f"Collaboration {seed['collaboration']['name']!r} (id {seed['collaboration']['id']}) between "
        + ", ".join(o["name"] for o in seed["organizations"]),
        "Users:",
    ]
    for user in seed["users"]:
        what = "administrator" if user["is_superuser"] else ", ".join(user["roles"])
        where = f" at {user['organization']}" if user["organization"] else ""
        password = user["password"] or f"(not shown: {user['password_source']})"
        lines.append(f"  {user['username']:<12} {password:<22} {what}{where}")
    lines.append("Nodes (config, data and log in their folders):")
    lines += [f"  {node.name:<16} {node.folder}" for node in nodes]
    lines += ["", "Stop it with ./vantage.sh stop (add --keep-docker to leave dockerd and the registry running)."]
    print("\n".join(lines), flush=True)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        up(args)
    except network.DemoError as exc:
        print(f"vantage: error: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("vantage: interrupted; what runs keeps running (./vantage.sh stop ends it)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
