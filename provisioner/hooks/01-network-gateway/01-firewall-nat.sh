#!/bin/bash
# Report (1) 01-iptables-nat.sh flushed every iptables rule and masqueraded eth0 by hand.
# Here firewalld keeps its rules: the public NIC joins the external zone (which masquerades),
# the install NIC the internal zone, and a policy lets the local network out through NAT.
# firewalld 1.x and 2.3 refuse a policy name over 17 characters (iptables' 28-character chain
# names: firewall/functions.py max_policy_name_len): INVALID_NAME.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

if ! firewall-cmd -q --permanent --zone=external --query-interface="$PUBLIC_INTERFACE"; then
    firewall-cmd -q --permanent --zone=external --change-interface="$PUBLIC_INTERFACE"
    CHANGED=1
fi
if ! firewall-cmd -q --permanent --zone=internal --query-interface="$NODE_INTERFACE"; then
    firewall-cmd -q --permanent --zone=internal --change-interface="$NODE_INTERFACE"
    CHANGED=1
fi
if ! firewall-cmd -q --permanent --zone=external --query-masquerade; then
    firewall-cmd -q --permanent --zone=external --add-masquerade
    CHANGED=1
fi
if ! firewall-cmd -q --permanent --info-policy=internal-external >/dev/null 2>&1; then
    firewall-cmd -q --permanent --new-policy=internal-external
    firewall-cmd -q --permanent --policy=internal-external --set-target=ACCEPT
    firewall-cmd -q --permanent --policy=internal-external --add-ingress-zone=internal
    firewall-cmd -q --permanent --policy=internal-external --add-egress-zone=external
    CHANGED=1
fi
if [ "$CHANGED" = 1 ]; then
    firewall-cmd -q --reload
fi
