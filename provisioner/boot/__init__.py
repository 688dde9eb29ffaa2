"""The boot path: DHCP config, TFTP, the boot server, per-MAC loader configs and the boot decision."""
