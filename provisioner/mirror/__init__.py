"""A local copy of the site's install tree and repos, fetched ahead and served by the boot server.

`sync` copies everything the kickstarts and the first-boot steps install from (os.install_tree,
the repos its .treeinfo names, os.repos) from os.mirror into <state>/mirror/pub/, keeping the
upstream's layout below os.mirror; the boot server answers /mirror/<that layout>. `served_url`
turns an upstream URL into the service's, which is all the kickstart and PXE code need.
"""

from provisioner.mirror.layout import mirror_base, served_file, served_url
from provisioner.mirror.sync import SyncError, SyncResult, sync

__all__ = ["mirror_base", "served_file", "served_url", "sync", "SyncError", "SyncResult"]
