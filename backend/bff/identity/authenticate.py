"""Turns a request's credentials into the Identity they name, or refuses them."""

import hmac
from urllib.parse import unquote

from fastapi import Request

from bff.errors import unauthorized
from bff.identity.principal import AuthMethod, Identity, Role, UserRecord
from bff.identity.role_sources import RoleSource
from bff.identity.tokens import verify_forwarded_user, verify_session_token
from bff.settings import Settings

SESSION_COOKIE = "token"
API_KEY_PREFIX = "sk-"
FORWARDED_JWT_HEADER = "x-openwebui-user-jwt"
CHAT_ID_HEADER = "x-openwebui-chat-id"
KNOWN_ROLES = frozenset(role.value for role in Role)


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.cookies.get(SESSION_COOKIE) or None


class Authenticator:
    def __init__(self, settings: Settings, role_source: RoleSource):
        self._settings = settings
        self._roles = role_source
        self._service_keys = [key.encode() for key in settings.bff_service_keys]
        jwt_secret = settings.forward_user_info_header_jwt_secret
        self._forward_secret = jwt_secret.get_secret_value() if jwt_secret else None

    def _is_service_key(self, token: str) -> bool:
        candidate = token.encode()
        # Compare against every key so timing does not tell which one matched.
        matches = [hmac.compare_digest(candidate, key) for key in self._service_keys]
        return any(matches)

    async def identify(self, request: Request) -> Identity:
        """Who the credentials name; their role is judged by Identity.principal()."""
        token = bearer_token(request)
        if token is None:
            raise unauthorized("missing credentials: send an Open-WebUI token as 'Authorization: Bearer'", "missing_credentials")
        if self._is_service_key(token):
            return await self._with_groups(self._service_identity(request))
        if token.startswith(API_KEY_PREFIX):
            return Identity(user=await self._roles.user_for_api_key(token), auth=AuthMethod.api_key)
        claims = verify_session_token(
            token, self._settings.webui_secret_key.get_secret_value(), self._settings.allow_tokens_without_exp
        )
        return Identity(user=await self._roles.user_for_session(token, claims), auth=AuthMethod.session_token)

    async def _with_groups(self, identity: Identity) -> Identity:
        """A forwarded user's Open-WebUI groups, from the role source by user id: neither the signed
        JWT nor the headers name groups, and a header that did would be the caller's word."""
        user = identity.user
        if user is None or user.role not in KNOWN_ROLES:  # refused by Identity.principal() anyway
            return identity
        groups = await self._roles.groups_for(user.id)
        return identity.model_copy(update={"user": user.model_copy(update={"groups": groups})})

    def _service_identity(self, request: Request) -> Identity:
        chat_id = request.headers.get(CHAT_ID_HEADER) or None
        forwarded_jwt = request.headers.get(FORWARDED_JWT_HEADER)
        if forwarded_jwt is not None:
            if self._forward_secret is None:
                raise unauthorized("forwarded user tokens are not configured (FORWARD_USER_INFO_HEADER_JWT_SECRET)")
            claims = verify_forwarded_user(forwarded_jwt, self._forward_secret)
            user = UserRecord(id=claims.sub, email=claims.email, name=claims.name, role=claims.role)
            return Identity(user=user, auth=AuthMethod.forwarded_jwt, chat_id=chat_id)
        user_id = request.headers.get("x-openwebui-user-id")
        if user_id is not None:
            if not self._settings.trust_forwarded_user_headers:
                raise unauthorized("plain X-OpenWebUI-User-* headers are not trusted here (TRUST_FORWARDED_USER_HEADERS)")
            role = request.headers.get("x-openwebui-user-role")
            if not user_id or not role:
                raise unauthorized("forwarded user headers need X-OpenWebUI-User-Id and X-OpenWebUI-User-Role")
            user = UserRecord(
                id=user_id,
                email=request.headers.get("x-openwebui-user-email"),
                # Open-WebUI URL-quotes the name so non-ASCII survives in a header.
                name=unquote(request.headers.get("x-openwebui-user-name", "")) or None,
                role=role,
            )
            return Identity(user=user, auth=AuthMethod.forwarded_headers, chat_id=chat_id)
        return Identity(user=None, auth=AuthMethod.service_key)
