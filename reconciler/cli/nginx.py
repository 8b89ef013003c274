"""`reconciler nginx D`: a server block whose document root is the site symlink.

`$realpath_root` makes nginx resolve the symlink per request, so PHP-FPM and OPcache see
the release's real path: after a switch, requests run the new release's files instead of
OPcache entries keyed by the old path (together with the FPM reload after each switch).
"""

from __future__ import annotations

from reconciler.core.declarations import SiteDeclaration
from reconciler.core.layout import SitePaths


def nginx_server_block(site: SiteDeclaration) -> str:
    root = SitePaths(site.base_path, site.domain).site_link + "/public"
    socket = f"/run/php/php{site.php}-fpm.sock" if site.php else "/run/php/php-fpm.sock"
    return f"""server {{
    listen 80;
    listen [::]:80;
    server_name {site.domain};
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
