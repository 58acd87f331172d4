"""What the monitoring pages know about the person looking at them."""

from typing import Literal

from pydantic import BaseModel

from bff.identity.principal import Role

Scope = Literal["all", "own"]


class Viewer(BaseModel):
    user_id: str
    name: str | None = None
    role: Role
    scope: Scope
