"""What `make run` prints once every part answers: where each part is, and the line to paste.

The token used to be printed once, above this, and scrolled away under the log lines; now the
banner ends with the `export` line the README's examples read (API, WS, TOKEN).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

UP = "punctual is up"
END = "Ctrl-C stops everything."


def shown(path: Path) -> str:
    """A path as the user would type it: relative to the working folder when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


@dataclass(frozen=True)
class Banner:
    api_url: str
    ws_url: str  # API Gateway's shape: ws://host:port/{stage}; the token goes in ?token=
    token: str
    token_note: str
    redis: str
    redis_cli: str | None
    aws: str

    def export_line(self) -> str:
        return f"export API={self.api_url} WS={self.ws_url} TOKEN={self.token}"

    def text(self) -> str:
        lines = [
            UP,
            f"  REST API   {self.api_url}",
            f"  WebSocket  {self.ws_url}?token={self.token}",
            f"  Redis      {self.redis}",
            *([f"             {self.redis_cli}"] if self.redis_cli else []),
            f"  AWS        {self.aws}",
            f"  API_TOKEN  {self.token_note}",
            "For the README's examples, in another terminal:",
            f"  {self.export_line()}",
            END,
        ]
        return "\n".join(lines)
