"""`python -m edge.env_check FILE`: check a desk's environment file with the edge's own settings rules, so a file
the edge would refuse is refused at set-up, with the same sentence. Used by `scripts/setup.sh edge --env-file`."""
from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import Optional, Sequence

from edge.config import load_config
from shared.config import ConfigError
from shared.envfile import EnvFileError, parse_env_file


def check(path: Path) -> str:
    """A one-line summary of the desk the file configures; ConfigError/EnvFileError when the edge would refuse it."""
    env = parse_env_file(path.read_text())
    unknown = sorted(k for k in env if not k.startswith("FACEMON_EDGE_"))
    if unknown:
        raise ConfigError(f"{', '.join(unknown)}: not edge settings (FACEMON_EDGE_*)")
    config = load_config([], env)
    if config.dashboard_url and not config.dashboard_token:
        raise ConfigError("FACEMON_EDGE_DASHBOARD_TOKEN is missing: the dashboard and the recognizer would refuse "
                          "this desk (bad_credential); make the file with facemon-dashboard add-stations")
    return (f"{config.station}: recognizer {config.recognizer_host}:{config.recognizer_port}, camera {config.source}, "
            f"sign-in {'on via ' + config.dashboard_url if config.auth_on else 'off'}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m edge.env_check FILE", file=sys.stderr)
        return 2
    path = Path(args[0])
    try:
        summary = check(path)
    except (OSError, ConfigError, EnvFileError) as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return 2
    if os.stat(path).st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        print(f"{path}: warning: readable by others; it holds the desk's tokens (chmod 600)", file=sys.stderr)
    print(f"{path}: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
