"""Power control through nodes' BMCs: Redfish (sushy), IPMI (pyghmi), and libvirt for lab VMs.

`bmc` (the description and how its password is kept) is imported by the registry and the site
parser, so this package's top level imports nothing; `control` runs the actions.
"""
