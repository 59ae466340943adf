"""The few Label Studio (1.x) REST calls ``alod serve`` makes, over the standard library's urllib.

Why not ``label-studio-sdk``: installing it into alod's environment downgrades numpy (2.4.6 to
2.2.6, through its ``opencv-python-headless`` pin) and brings about 45 packages (pandas, nltk,
opencv, black, ...) for what is here two HTTP calls.

Authentication: the API key comes from the environment variable ``LABEL_STUDIO_API_KEY``
(:data:`API_KEY_ENV`; Label Studio: Account & Settings). Both kinds of key work:

* a legacy token (40 hex characters; the organization must allow legacy tokens, e.g. Label Studio
  started with ``--enable-legacy-api-token``): sent as ``Authorization: Token <key>``;
* a personal access token (a JWT: three dot-separated parts): a refresh token, exchanged at
  ``POST /api/token/refresh`` for an access token sent as ``Authorization: Bearer <access>``, and
  exchanged again when Label Studio answers 401 (access tokens expire after minutes).

The key goes only to the Label Studio URL given: redirects are not followed (a redirect would
carry the key to whatever host it names).
"""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from alod.utils import AlodError

#: Where the API key is read from.
API_KEY_ENV = "LABEL_STUDIO_API_KEY"
#: Where Label Studio's URL is read from when not given on the command line.
URL_ENV = "LABEL_STUDIO_URL"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # a 3xx becomes an HTTPError instead of a new request
        return None


class LabelStudioClient:
    """Label Studio's REST API at ``url`` (e.g. ``http://localhost:8080``) with ``api_key``."""

    def __init__(self, url: str, api_key: str, *, timeout: float = 60.0):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise AlodError(f"Label Studio URL {url!r} is not an http(s) URL (e.g. http://localhost:8080)")
        if not api_key:
            raise AlodError(f"no Label Studio API key: set {API_KEY_ENV} (Label Studio: Account & Settings)")
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self._opener = urllib.request.build_opener(_NoRedirect)
        self._access: str | None = None  # the access token of a personal access token

    def _personal(self) -> bool:
        return self.api_key.count(".") == 2

    def _auth(self, refresh: bool = False) -> str:
        if not self._personal():
            return f"Token {self.api_key}"
        if self._access is None or refresh:
            got = self._send("POST", "/api/token/refresh", {"refresh": self.api_key}, auth=None)
            if not isinstance(got, dict) or not isinstance(got.get("access"), str):
                raise AlodError(f"Label Studio at {self.url}: /api/token/refresh gave no access token")
            self._access = got["access"]
        return f"Bearer {self._access}"

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """``method`` ``path`` (``/api/...``, query included) with a JSON ``body``; the parsed JSON answer.

        Raises:
            AlodError: Label Studio cannot be reached, or answers with an error (status and text).
        """
        try:
            return self._send(method, path, body, auth=self._auth())
        except _Unauthorized:
            if not self._personal():
                raise AlodError(f"Label Studio at {self.url} refused the API key in {API_KEY_ENV} (HTTP 401); "
                                "a legacy token needs legacy tokens enabled for the organization") from None
            try:
                return self._send(method, path, body, auth=self._auth(refresh=True))
            except _Unauthorized:
                raise AlodError(f"Label Studio at {self.url} refused the personal access token in {API_KEY_ENV} "
                                "(HTTP 401)") from None

    def _send(self, method: str, path: str, body: Any, *, auth: str | None) -> Any:
        data = None if body is None else json.dumps(body, allow_nan=False).encode("utf-8")
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = auth
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                text = resp.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            detail = e.read().decode("utf-8", "replace")[:500]
            if e.code == 401 and auth:
                raise _Unauthorized() from None
            raise AlodError(f"Label Studio {method} {path}: HTTP {e.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as e:
            raise AlodError(f"cannot reach Label Studio at {self.url} ({getattr(e, 'reason', e)})") from None
        try:
            return json.loads(text) if text.strip() else None
        except ValueError:
            raise AlodError(f"Label Studio {method} {path}: not JSON: {text[:200]!r}") from None

    def import_tasks(self, project: int | str, tasks: list[dict]) -> dict:
        """Create ``tasks`` (with their ``predictions``) in project ``project``.

        Returns Label Studio's answer: ``{"task_count", "prediction_count", "task_ids", ...}``.
        """
        return self.request("POST", f"/api/projects/{int(project)}/import?return_task_ids=true", tasks)


class _Unauthorized(Exception):
    pass


def client_from_env(url: str | None) -> LabelStudioClient:
    """A client for ``url`` (else ``$LABEL_STUDIO_URL``) with the key in ``$LABEL_STUDIO_API_KEY``."""
    url = url or os.environ.get(URL_ENV)
    if not url:
        raise AlodError(f"no Label Studio URL: pass --label-studio-url or set {URL_ENV}")
    return LabelStudioClient(url, os.environ.get(API_KEY_ENV, ""))
