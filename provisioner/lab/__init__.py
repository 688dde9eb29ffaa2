"""The labs: libvirt VMs (vms), the offline rehearsal installer, and the role rehearsal in system containers (roles)."""
