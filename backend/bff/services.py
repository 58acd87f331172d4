"""The long-lived objects of one BFF process, built at start-up from Settings."""

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from bff.identity.authenticate import Authenticator
from bff.identity.principal import Principal
from bff.identity.role_sources import RoleSource, build_role_source
from bff.policy.access import AccessPolicy
from bff.policy.model import load_policy
from bff.request_log import RequestLogFields
from bff.settings import Settings
from bff.upstream.catalog import CatalogCache
from bff.upstream.litellm import LiteLLMClient


@dataclass
class Services:
    settings: Settings
    role_source: RoleSource
    authenticator: Authenticator
    access: AccessPolicy
    litellm: LiteLLMClient
    catalog: CatalogCache

    @classmethod
    def build(cls, settings: Settings) -> "Services":
        access = AccessPolicy(load_policy(settings.policy_file))  # invalid policy: refuse to start
        role_source = build_role_source(settings)
        litellm = LiteLLMClient(settings)
        return cls(
            settings=settings,
            role_source=role_source,
            authenticator=Authenticator(settings, role_source),
            access=access,
            litellm=litellm,
            catalog=CatalogCache(litellm, settings.catalog_ttl_seconds),
        )

    async def aclose(self) -> None:
        await self.litellm.aclose()
        await self.role_source.aclose()


# Dependencies are `async` on purpose: FastAPI runs plain functions on a worker thread.
async def get_services(request: Request) -> Services:
    return request.app.state.services


async def get_log_fields(request: Request) -> RequestLogFields:
    return request.state.log


async def get_principal(request: Request) -> Principal:
    principal = await request.app.state.services.authenticator.authenticate(request)
    request.state.log.principal_id = principal.user_id or "service"
    return principal


ServicesDep = Annotated[Services, Depends(get_services)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
LogFieldsDep = Annotated[RequestLogFields, Depends(get_log_fields)]
