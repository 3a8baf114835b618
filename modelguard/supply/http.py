"""modelguard's one way to open an http(s) URL: redirects that never downgrade, every hop kept.

Used by downloads (fetch) and by range reads (remote scans) alike. A redirect
from https to plain http is refused unless the caller allows http (an attacker
on the path could otherwise swap the bytes), a redirect to any other scheme is
refused always, credentials are never carried to another origin (a CDN's signed
URL is its own credential), and every URL visited is recorded so reports can
name where bytes really came from.
"""

from __future__ import annotations

import http.client
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from http.client import HTTPMessage
from typing import IO

from modelguard._version import __version__
from modelguard.errors import FetchError
from modelguard.supply.sources import display_url

USER_AGENT = f"modelguard/{__version__}"


@dataclass(frozen=True)
class Hop:
    """A URL visited; ``status`` is the redirect that led away from it (None: the last)."""

    url: str
    status: int | None = None


def describe(hops: list[Hop]) -> str:
    """``a (302) → b (301) → c``, without query strings."""
    return " → ".join(
        display_url(h.url) + (f" ({h.status})" if h.status is not None else "") for h in hops
    )


class InsecureRedirect(FetchError):
    """A redirect led to plain http (not allowed) or to a scheme that is not http(s)."""

    def __init__(self, hops: list[Hop], target: str, why: str) -> None:
        self.hops = [*hops, Hop(target)]
        super().__init__(f"{display_url(hops[0].url)}: {why}: {describe(self.hops)}")


def same_origin(a: str, b: str) -> bool:
    pa, pb = urllib.parse.urlsplit(a), urllib.parse.urlsplit(b)
    return (pa.scheme, pa.netloc) == (pb.scheme, pb.netloc)


class _Redirects(urllib.request.HTTPRedirectHandler):
    def __init__(self, url: str, allow_http: bool) -> None:
        super().__init__()
        self.allow_http = allow_http
        self.hops = [Hop(url)]

    def _refuse_unsafe(
        self, req: urllib.request.Request, fp: IO[bytes], code: int, newurl: str
    ) -> None:
        old = urllib.parse.urlsplit(req.full_url).scheme
        new = urllib.parse.urlsplit(newurl).scheme
        why = None
        if new not in ("http", "https"):
            why = f"redirected to a {new or 'schemeless'}: URL"
        elif old == "https" and new == "http" and not self.allow_http:
            why = "redirected from https to plain http (`allow_http` is off)"
        if why is not None:
            fp.close()
            raise InsecureRedirect([*self.hops[:-1], Hop(req.full_url, code)], newurl, why)

    def http_error_302(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: HTTPMessage,
    ) -> object:
        # urllib refuses some schemes itself with a plain HTTPError; judge every
        # Location first so each refusal is the same typed error.
        location = headers.get("location") or headers.get("uri")
        if location:
            self._refuse_unsafe(req, fp, code, urllib.parse.urljoin(req.full_url, location))
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        self._refuse_unsafe(req, fp, code, newurl)
        self.hops[-1] = Hop(self.hops[-1].url, code)
        self.hops.append(Hop(newurl))
        request = super().redirect_request(req, fp, code, msg, headers, newurl)
        if request is not None and req.get_method() == "HEAD":
            request.method = "HEAD"  # urllib turns every redirect into a GET (a body download)
        if request is not None and not same_origin(req.full_url, request.full_url):
            for name in ("Authorization", "Cookie"):
                request.remove_header(name)
        return request


def open_url(
    url: str,
    headers: Mapping[str, str],
    timeout: float,
    *,
    allow_http: bool,
    method: str = "GET",
) -> tuple[http.client.HTTPResponse, list[Hop]]:
    """GET (or HEAD) ``url``; returns the response and the hops that led to it.

    Raises:
        InsecureRedirect: a redirect to plain http (without ``allow_http``) or
            to another scheme.
        urllib.error.HTTPError, urllib.error.URLError, OSError: as urllib raises them.
    """
    handler = _Redirects(url, allow_http)
    opener = urllib.request.build_opener(handler)
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked by the caller
        url,
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **headers},
        method=method,
    )
    response: http.client.HTTPResponse = opener.open(request, timeout=timeout)
    return response, handler.hops
