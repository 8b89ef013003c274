"""`reconciler nginx D`: a server block whose document root is the site symlink.

`$realpath_root` makes nginx resolve the symlink per request, so PHP-FPM and OPcache see
the release's real path: after a switch, requests run the new release's files instead of
OPcache entries keyed by the old path (together with the FPM reload after each switch).

Every value pasted into the block must be one nginx token: a value holding anything nginx reads
as syntax (`;`, braces, `#`, quotes, a backslash, whitespace, `$`) or a control character is
refused, whatever the declaration validator let through (defense in depth).
"""

from __future__ import annotations

import re

from reconciler.core.declarations import SiteDeclaration, printable
from reconciler.core.layout import SitePaths
from reconciler.errors import ReconcilerError

# Characters that end, open, comment out, quote, escape or interpolate inside an nginx directive.
_NGINX_SYNTAX = re.compile(r"""[;{}#'"\\$\s\x00-\x1f\x7f]""")


def nginx_token(what: str, value: str) -> str:
    """`value` unchanged when nginx reads it as one plain token; ReconcilerError otherwise."""
    if not value or _NGINX_SYNTAX.search(value):
        raise ReconcilerError(f"{what} '{printable(value)}' holds characters nginx reads as syntax; "
                              "no server block written")
    return value


def nginx_server_block(site: SiteDeclaration) -> str:
    domain = nginx_token("domain", site.domain)
    root = nginx_token("root", SitePaths(site.base_path, site.domain).site_link + "/public")
    socket = nginx_token("php socket", f"/run/php/php{site.php}-fpm.sock" if site.php else "/run/php/php-fpm.sock")
    return f"""server {{
    listen 80;
    listen [::]:80;
    server_name {domain};
    # The site symlink; switched atomically by reconciler on every deploy and rollback.
    root {root};
    index index.php index.html;

    location / {{
        try_files $uri $uri/ /index.php?$query_string;
    }}

    location ~ \\.php$ {{
        include fastcgi_params;
        fastcgi_pass unix:{socket};
        # Resolve the symlink per request so PHP and OPcache see the release's real path.
        fastcgi_param SCRIPT_FILENAME $realpath_root$fastcgi_script_name;
        fastcgi_param DOCUMENT_ROOT $realpath_root;
    }}

    location ~ /\\.(?!well-known) {{
        deny all;
    }}
}}"""
